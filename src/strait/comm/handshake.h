// Agreement among the job's ranks on a few named values, through the rendezvous store.
//
// Used before the process groups exist (world and local sizes: ranks that disagree on them
// would build groups that never connect) and later for the configuration hash. Rank 0 is the
// arbiter: it collects every rank's values, compares them with its own and publishes one
// verdict that every rank reads, so all ranks fail together with the same message naming the
// ranks that differ, or the ranks that never arrived.
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace c10d {
class Store;
}

namespace strait::comm {

using Fields = std::vector<std::pair<std::string, std::string>>;  // name -> value, in order

struct HandshakeOptions {
  std::string topic;          // names the exchange in messages, e.g. "rendezvous"
  std::string key_space;      // unique per exchange: its keys live under strait/handshake/<key_space>/
  std::string store_address;  // "host:port", for messages
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds timeout{60000};
};

// Every rank calls it with the same topic and key space. Returns once all ranks of rank 0's
// world agree with rank 0; otherwise throws strait::Error on every rank that arrived. Rank 0
// waits up to `timeout` for the others; the others wait up to twice that for rank 0's verdict.
void agree_through_store(const c10::intrusive_ptr<c10d::Store>& store, const HandshakeOptions& options,
                         const Fields& mine);

}  // namespace strait::comm
