#!/usr/bin/python3
"""The transfers of DiLoCo's dense outer exchange, apart from training: PyTorch's Gloo (Debian's
python3-torch) on every node of a shaped testbed, each transfer's receive posted before its send
as in strait's Group (src/strait/comm/group.cpp). Four ways to move them, timed one after the
other in each round, every rank starting together (a barrier, then 0.5 s idle, as after a window
of training):

- all-to-all: one chunk to and from every other rank at once (the reduce-scatter's transfers);
- pairwise: the same chunks, one peer at a time (step s: to rank + s, from rank - s);
- ring all-gather: n - 1 steps, each forwarding the chunk received the step before (strait's);
- direct all-gather: this rank's chunk to every other rank at once.

Each moves (n - 1) chunks of bytes / n out of every node. Printed by node 0, per round and way:
its own time, and the fastest and slowest node's, over the link time of those bytes at the
nominal rate. Run it on the testbed:

    scripts/wan --nodes 4 --link 20mbit --run-cmd -- /usr/bin/python3 bench/gloo_exchange.py

Options: --bytes (default 3,478,016: the `micro` preset's weights in fp32), --rounds (default 4).
"""
import argparse
import os
import time

import torch
import torch.distributed as dist


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bytes", type=int, default=3478016)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rank, n = int(os.environ["NODE_RANK"]), int(os.environ["NNODES"])
    dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                            rank=rank, world_size=n)
    chunk = args.bytes // 4 // n  # float32 values a chunk
    values = torch.randn(chunk * n)
    received = torch.empty(chunk * n)
    part = lambda tensor, peer: tensor[peer * chunk:(peer + 1) * chunk]

    def wait(works):
        for work in works:
            work.wait()

    def all_to_all():
        works = [dist.irecv(part(received, peer), peer) for peer in range(n) if peer != rank]
        works += [dist.isend(part(values, peer).clone(), peer) for peer in range(n) if peer != rank]
        wait(works)

    def pairwise():
        for step in range(1, n):
            to, source = (rank + step) % n, (rank - step) % n
            wait([dist.irecv(part(received, source), source), dist.isend(part(values, to).clone(), to)])

    def ring_all_gather():
        left, right = (rank - 1) % n, (rank + 1) % n
        works = []
        for step in range(1, n):
            wait(works)  # this step forwards what the last one received
            outgoing = part(received if step > 1 else values, (rank - step + 1) % n).clone()
            works = [dist.irecv(part(received, (rank - step) % n), left), dist.isend(outgoing, right)]
        wait(works)

    def direct_all_gather():
        works = [dist.irecv(part(received, peer), peer) for peer in range(n) if peer != rank]
        mine = part(values, rank).clone()
        works += [dist.isend(mine, peer) for peer in range(n) if peer != rank]
        wait(works)

    link_s = (n - 1) * chunk * 4 * 8 / float(os.environ["WAN_LINK_BITS_PER_S"])
    ways = [("all-to-all", all_to_all), ("pairwise", pairwise), ("ring all-gather", ring_all_gather),
            ("direct all-gather", direct_all_gather)]
    for round_index in range(args.rounds):
        for name, way in ways:
            dist.barrier()
            time.sleep(0.5)
            dist.barrier()
            start = time.time()
            way()
            seconds = time.time() - start
            slowest, fastest = torch.tensor([seconds]), torch.tensor([seconds])
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            dist.all_reduce(fastest, op=dist.ReduceOp.MIN)
            if rank == 0:
                print(f"round {round_index} {name:17s} node 0 {seconds / link_s:5.2f}x  fastest {fastest.item() / link_s:5.2f}x"
                      f"  slowest {slowest.item() / link_s:5.2f}x the link time", flush=True)


if __name__ == "__main__":
    main()
