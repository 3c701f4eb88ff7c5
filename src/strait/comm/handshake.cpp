#include "strait/comm/handshake.h"

#include <nlohmann/json.hpp>
#include <thread>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "strait/comm/topology.h"
#include "strait/core/error.h"

namespace strait::comm {

namespace {

using Clock = std::chrono::steady_clock;

const std::string kVerdictKey = "verdict";
const std::string kAcksKey = "acks";
const std::string kAgreed = "ok";

std::string value_key(int rank) { return "value/" + std::to_string(rank); }

// Each difference reads "<name>=<theirs> where rank 0 has <name>=<reference's>".
std::vector<std::string> differences(const Fields& theirs, const Fields& reference) {
  std::vector<std::string> found;
  for (size_t i = 0; i < std::max(theirs.size(), reference.size()); ++i) {
    auto field = [](const Fields& fields, size_t index) {
      return index < fields.size() ? fields[index].first + "=" + fields[index].second : std::string("(nothing)");
    };
    if (field(theirs, i) != field(reference, i))
      found.push_back(field(theirs, i) + " where rank 0 has " + field(reference, i));
  }
  return found;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string text;
  for (size_t i = 0; i < parts.size(); ++i) text += (i ? "; " : "") + parts[i];
  return text;
}

std::string ranks_text(const std::vector<int>& ranks) {
  return (ranks.size() == 1 ? "rank " : "ranks ") + join_ranks(ranks);
}

// The store seen through this handshake's key prefix; every failed request names the store,
// rank 0 (which serves it) and what this rank was doing.
class Exchange {
 public:
  Exchange(const c10::intrusive_ptr<c10d::Store>& store, const HandshakeOptions& options)
      : store_(c10::make_intrusive<c10d::PrefixStore>("strait/handshake/" + options.key_space, store)),
        options_(options) {}

  void set(const std::string& key, const std::string& value) {
    guarded("publishing " + key, [&] { store_->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
  }

  std::string get(const std::string& key) {
    std::vector<uint8_t> value;
    guarded("reading " + key, [&] { value = store_->get(key); });
    return std::string(value.begin(), value.end());
  }

  int64_t add(const std::string& key, int64_t amount) {
    int64_t total = 0;
    guarded("updating " + key, [&] { total = store_->add(key, amount); });
    return total;
  }

  // Polls, so that one deadline covers several keys (Store::wait has a timeout per call).
  bool poll_for(const std::string& key, Clock::time_point deadline) {
    for (;;) {
      bool present = false;
      guarded("waiting for " + key, [&] { present = store_->check({key}); });
      if (present) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Store::wait bounds the reply by `timeout`, so it also fails on a store that accepted the
  // connection but never answers (another program on the port), where check() would block.
  void await(const std::string& key, std::chrono::milliseconds timeout) {
    guarded("waiting up to " + std::to_string(timeout.count()) + " ms for " + key,
            [&] { store_->wait({key}, timeout); });
  }

  Fields fields_of(int rank) {
    const std::string text = get(value_key(rank));
    try {
      return nlohmann::json::parse(text).get<Fields>();
    } catch (const std::exception& failure) {
      throw Error(options_.topic + ": rank " + std::to_string(rank) + " published '" + text +
                  "', not a strait handshake (is another program using " + options_.store_address + "?)");
    }
  }

 private:
  template <typename Action>
  void guarded(const std::string& doing, Action action) {
    try {
      action();
    } catch (const std::exception& failure) {
      throw Error(options_.topic + ": rank " + std::to_string(options_.rank) + " got no answer from the store on " +
                  options_.store_address + " (served by rank 0) while " + doing + ": " + failure.what());
    }
  }

  c10::intrusive_ptr<c10d::Store> store_;
  HandshakeOptions options_;
};

// "" when every rank arrived and agrees with rank 0.
std::string compose_verdict(const HandshakeOptions& options, const std::vector<std::string>& disagreements,
                            const std::vector<int>& missing) {
  std::vector<std::string> problems;
  if (!disagreements.empty()) problems.push_back("ranks disagree: " + joined(disagreements));
  if (!missing.empty()) {
    problems.push_back(ranks_text(missing) + " did not arrive at the store on " + options.store_address + " within " +
                       std::to_string(options.timeout.count()) + " ms");
  }
  return problems.empty() ? "" : options.topic + ": " + joined(problems);
}

void arbitrate(Exchange& exchange, const HandshakeOptions& options, const Fields& mine) {
  const auto deadline = Clock::now() + options.timeout;
  std::vector<int> missing;
  std::vector<std::string> disagreements;
  for (int rank = 1; rank < options.world_size; ++rank) {
    if (!exchange.poll_for(value_key(rank), deadline)) {
      missing.push_back(rank);
      continue;
    }
    for (const std::string& difference : differences(exchange.fields_of(rank), mine)) {
      disagreements.push_back("rank " + std::to_string(rank) + " has " + difference);
    }
  }
  const std::string verdict = compose_verdict(options, disagreements, missing);
  exchange.set(kVerdictKey, verdict.empty() ? kAgreed : verdict);
  if (verdict.empty()) return;
  // Serve the store until the others have read the verdict, so they fail with it rather than
  // with a lost connection.
  const int64_t readers = options.world_size - 1 - static_cast<int64_t>(missing.size());
  const auto linger_deadline = Clock::now() + options.timeout;
  while (exchange.add(kAcksKey, 0) < readers && Clock::now() < linger_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw Error(verdict);
}

void follow(Exchange& exchange, const HandshakeOptions& options, const Fields& mine) {
  exchange.await(value_key(0), options.timeout);
  // Rank 0 may wait a full timeout for the others before it decides.
  exchange.await(kVerdictKey, 2 * options.timeout);
  const std::string verdict = exchange.get(kVerdictKey);
  exchange.add(kAcksKey, 1);
  if (verdict != kAgreed) throw Error(verdict);
  // Rank 0 only compares the ranks of its own world; a rank outside it must check itself.
  const std::vector<std::string> mismatches = differences(mine, exchange.fields_of(0));
  if (!mismatches.empty()) {
    throw Error(options.topic + ": ranks disagree: rank " + std::to_string(options.rank) + " has " +
                joined(mismatches));
  }
}

}  // namespace

void agree_through_store(const c10::intrusive_ptr<c10d::Store>& store, const HandshakeOptions& options,
                         const Fields& mine) {
  Exchange exchange(store, options);
  exchange.set(value_key(options.rank), nlohmann::json(mine).dump());
  if (options.rank == 0) {
    arbitrate(exchange, options, mine);
  } else {
    follow(exchange, options, mine);
  }
}

}  // namespace strait::comm
