#include "strait/strategy/replica_exchange.h"

#include <vector>

namespace strait {

namespace {

// Elements in each of `parts` equal pieces covering `count` (the last ones zero-padded).
int64_t piece_size(int64_t count, int parts) { return (count + parts - 1) / parts; }

}  // namespace

ReplicaExchange::ReplicaExchange(comm::Group* replica, comm::Group* across, codec::WireDtype dtype)
    : replica_(replica), across_(across), codec_(dtype) {}

int64_t ReplicaExchange::mean(const torch::Tensor& flat, const std::string& label) {
  if (across_ == nullptr) {  // one process: only the trip through the wire dtype remains
    std::vector<uint8_t> bytes(codec_.encoded_size(static_cast<size_t>(flat.numel())));
    codec_.encode(flat.data_ptr<float>(), static_cast<size_t>(flat.numel()), bytes.data());
    codec_.decode(bytes.data(), bytes.size(), flat.data_ptr<float>(), static_cast<size_t>(flat.numel()));
    return 0;
  }
  if (replica_ == nullptr) return mean_of_shard(flat, label);  // this rank's own part
  const int positions = replica_->size();
  const int64_t count = flat.numel();
  const int64_t shard_size = piece_size(count, positions);
  torch::Tensor padded = torch::zeros({shard_size * positions}, torch::kFloat32);
  padded.narrow(0, 0, count).copy_(flat);
  torch::Tensor shard = padded.narrow(0, shard_size * replica_->rank(), shard_size).clone();
  const int64_t sent = mean_of_shard(shard, label);
  if (positions > 1) {
    std::vector<torch::Tensor> shards;
    for (int p = 0; p < positions; ++p) shards.push_back(padded.narrow(0, shard_size * p, shard_size));
    replica_->all_gather(shard, shards, label + "/in_replica").wait();
  } else {
    padded.copy_(shard);
  }
  flat.copy_(padded.narrow(0, 0, count));
  return sent;
}

int64_t ReplicaExchange::mean_of_shard(const torch::Tensor& shard, const std::string& label) {
  const int owners = across_->size();
  const int64_t slice_size = piece_size(shard.numel(), owners);
  torch::Tensor values = torch::zeros({slice_size * owners}, torch::kFloat32);
  values.narrow(0, 0, shard.numel()).copy_(shard);
  const auto slice_bytes = static_cast<int64_t>(codec_.encoded_size(static_cast<size_t>(slice_size)));

  // Each owner's slice of this rank's values, encoded, to that owner.
  torch::Tensor outgoing = torch::empty({slice_bytes * owners}, torch::kUInt8);
  for (int owner = 0; owner < owners; ++owner) {
    codec_.encode(values.data_ptr<float>() + slice_size * owner, static_cast<size_t>(slice_size),
                  outgoing.data_ptr<uint8_t>() + slice_bytes * owner);
  }
  torch::Tensor incoming = torch::empty_like(outgoing);
  across_->all_to_all(outgoing, incoming, label + "/alltoall").wait();

  // The owner's mean of its slice, summed in a fixed order and encoded once.
  torch::Tensor decoded = torch::empty({slice_size}, torch::kFloat32);
  torch::Tensor sum = torch::zeros({slice_size}, torch::kFloat32);
  for (int sender = 0; sender < owners; ++sender) {
    codec_.decode(incoming.data_ptr<uint8_t>() + slice_bytes * sender, static_cast<size_t>(slice_bytes),
                  decoded.data_ptr<float>(), static_cast<size_t>(slice_size));
    sum.add_(decoded);
  }
  sum.div_(static_cast<double>(owners));
  torch::Tensor mine = torch::empty({slice_bytes}, torch::kUInt8);
  codec_.encode(sum.data_ptr<float>(), static_cast<size_t>(slice_size), mine.data_ptr<uint8_t>());

  std::vector<torch::Tensor> means;
  for (int owner = 0; owner < owners; ++owner) means.push_back(torch::empty({slice_bytes}, torch::kUInt8));
  across_->all_gather(mine, means, label + "/allgather").wait();
  for (int owner = 0; owner < owners; ++owner) {
    codec_.decode(means[owner].data_ptr<uint8_t>(), static_cast<size_t>(slice_bytes),
                  values.data_ptr<float>() + slice_size * owner, static_cast<size_t>(slice_size));
  }
  shard.copy_(values.narrow(0, 0, shard.numel()));
  // One encoded slice to each other owner, then this owner's mean to each of them.
  return 2 * (owners - 1) * slice_bytes;
}

}  // namespace strait
