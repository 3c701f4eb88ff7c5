// A lane: a FIFO of tasks that one thread of its own runs one at a time, in the order posted.
//
// Every comm::Group owns one. Gloo matches a group's collectives across ranks by the order in
// which they start (ProcessGroupGloo numbers them with a counter that is not thread-safe), so a
// single thread starts them all, in the order the program issued them, and waits for each
// before starting the next.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace strait::comm {

class Lane {
 public:
  Lane() = default;
  // Runs every task already posted, then stops the thread.
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  // Queues `task` behind every task posted before it. `task` must not throw. Thread-safe; the
  // first call starts the thread, so a lane that is never used costs none.
  void post(std::function<void()> task);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace strait::comm
