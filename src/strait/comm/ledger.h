// The traffic ledger: every byte this rank puts on, or takes off, the wire in a collective,
// tagged with the class of link it travels on.
//
// Figures are payload bytes as Gloo's algorithms move them (see gloo_algorithms.h), computed
// when a collective is issued, on the issuing thread (all_gather_bytes' second phase: on the
// group's lane, once the sizes are known); transport headers and the rendezvous store are not
// counted.
// Intended usage, per training step:
//   LedgerSnapshot before = comm.ledger().snapshot();
//   ... collectives ...
//   LedgerSnapshot step = comm.ledger().snapshot() - before;
//   metrics.write({{"step", s}, {"traffic", step.to_json()}});
// Thread-safe: collectives may be issued from several threads (autograd hooks, lanes).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strait/comm/topology.h"

namespace strait::comm {

// IntraNode: both ends of the transfer are on the same node; CrossNode: they are not.
enum class LinkClass { IntraNode, CrossNode };

const char* to_string(LinkClass link);

struct Traffic {
  uint64_t sent = 0;
  uint64_t received = 0;

  Traffic& operator+=(const Traffic& other);
  Traffic operator-(const Traffic& earlier) const;
  bool operator==(const Traffic& other) const { return sent == other.sent && received == other.received; }
};

struct LinkTraffic {
  Traffic intra_node;
  Traffic cross_node;

  Traffic& of(LinkClass link) { return link == LinkClass::IntraNode ? intra_node : cross_node; }
  const Traffic& of(LinkClass link) const { return link == LinkClass::IntraNode ? intra_node : cross_node; }
  LinkTraffic& operator+=(const LinkTraffic& other);
  LinkTraffic operator-(const LinkTraffic& earlier) const;
};

// What this rank exchanges with one peer in one collective.
struct PeerTraffic {
  int peer = 0;  // a group rank inside gloo_algorithms.h, a global rank in Ledger::record
  uint64_t sent = 0;
  uint64_t received = 0;
};

struct OperationTraffic {
  uint64_t calls = 0;
  LinkTraffic links;
};

struct LedgerSnapshot {
  LinkTraffic totals;
  std::map<std::string, OperationTraffic> operations;  // by operation name, e.g. "allreduce"

  // Traffic between an earlier snapshot and this one (operations absent from both are omitted).
  LedgerSnapshot operator-(const LedgerSnapshot& earlier) const;

  // {"intra_node": {"sent": B, "received": B}, "cross_node": {...},
  //  "operations": {"allreduce": {"calls": n, "intra_node": {...}, "cross_node": {...}}, ...}}
  nlohmann::json to_json() const;
};

class Ledger {
 public:
  // `topology` is this rank's: it classifies each peer's link.
  explicit Ledger(Topology topology);

  // Counts one call of `operation` moving `transfers`, whose peers are global ranks.
  // Throws strait::Error if a peer is not a rank of the job.
  void record(const std::string& operation, const std::vector<PeerTraffic>& transfers);

  LedgerSnapshot snapshot() const;
  Traffic total(LinkClass link) const;
  nlohmann::json to_json() const { return snapshot().to_json(); }

 private:
  Topology topology_;
  mutable std::mutex mutex_;
  LedgerSnapshot state_;
};

}  // namespace strait::comm
