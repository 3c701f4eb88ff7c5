#include "strait/comm/ledger.h"

namespace strait::comm {

namespace {

nlohmann::json traffic_json(const Traffic& traffic) { return {{"sent", traffic.sent}, {"received", traffic.received}}; }

nlohmann::json links_json(const LinkTraffic& links) {
  return {{to_string(LinkClass::IntraNode), traffic_json(links.intra_node)},
          {to_string(LinkClass::CrossNode), traffic_json(links.cross_node)}};
}

}  // namespace

const char* to_string(LinkClass link) { return link == LinkClass::IntraNode ? "intra_node" : "cross_node"; }

Traffic& Traffic::operator+=(const Traffic& other) {
  sent += other.sent;
  received += other.received;
  return *this;
}

Traffic Traffic::operator-(const Traffic& earlier) const { return {sent - earlier.sent, received - earlier.received}; }

LinkTraffic& LinkTraffic::operator+=(const LinkTraffic& other) {
  intra_node += other.intra_node;
  cross_node += other.cross_node;
  return *this;
}

LinkTraffic LinkTraffic::operator-(const LinkTraffic& earlier) const {
  return {intra_node - earlier.intra_node, cross_node - earlier.cross_node};
}

LedgerSnapshot LedgerSnapshot::operator-(const LedgerSnapshot& earlier) const {
  LedgerSnapshot difference;
  difference.totals = totals - earlier.totals;
  for (const auto& [name, now] : operations) {
    auto before = earlier.operations.find(name);
    if (before == earlier.operations.end()) {
      difference.operations[name] = now;
    } else if (now.calls != before->second.calls) {
      difference.operations[name] = {now.calls - before->second.calls, now.links - before->second.links};
    }
  }
  return difference;
}

nlohmann::json LedgerSnapshot::to_json() const {
  nlohmann::json json = links_json(totals);
  json["operations"] = nlohmann::json::object();
  for (const auto& [name, operation] : operations) {
    nlohmann::json entry = links_json(operation.links);
    entry["calls"] = operation.calls;
    json["operations"][name] = entry;
  }
  return json;
}

Ledger::Ledger(Topology topology) : topology_(topology) { topology_.validate(); }

void Ledger::record(const std::string& operation, const std::vector<PeerTraffic>& transfers) {
  // Classify before taking the lock: node_of throws on a bad peer and must leave nothing half-done.
  LinkTraffic call;
  for (const PeerTraffic& transfer : transfers) {
    LinkClass link = topology_.same_node(topology_.rank, transfer.peer) ? LinkClass::IntraNode : LinkClass::CrossNode;
    call.of(link) += Traffic{transfer.sent, transfer.received};
  }
  std::lock_guard<std::mutex> lock(mutex_);
  OperationTraffic& entry = state_.operations[operation];
  entry.calls += 1;
  entry.links += call;
  state_.totals += call;
}

LedgerSnapshot Ledger::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

Traffic Ledger::total(LinkClass link) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_.totals.of(link);
}

}  // namespace strait::comm
