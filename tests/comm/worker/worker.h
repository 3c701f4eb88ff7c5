// What the worker's scenario files share (tests/comm/worker/): a scenario runs as one rank of a
// job and returns what it observed, for the tests (tests/comm/) to judge.
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "strait/comm/communicator.h"

namespace strait::comm_worker {

using json = nlohmann::json;
using Options = std::map<std::string, std::string>;  // the key=value arguments
using Scenario = std::function<json(comm::Communicator&, const Options&)>;

std::string option(const Options& options, const std::string& key, const std::string& fallback);
int64_t int_option(const Options& options, const std::string& key, int64_t fallback);

// The tensor's elements as doubles.
json values(const torch::Tensor& tensor);

// What a call threw (a strait::Error's message), or "accepted".
std::string rejection(const std::function<void()>& call);

// {"rank": group rank, "size": n, "members": global ranks}
json describe(comm::Group& group);

// The scenarios of the asynchronous engine (async_scenarios.cpp), by name.
const std::map<std::string, Scenario>& async_scenarios();

// The scenarios of ZeRO++'s quantized reduce-scatter (qgz_scenarios.cpp), by name.
const std::map<std::string, Scenario>& qgz_scenarios();

}  // namespace strait::comm_worker
