#include "strait/launch/line_relay.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <sstream>
#include <string>

#include "strait/core/error.h"
#include "test_support.h"

namespace strait::launch {
namespace {

using testing::ScratchDir;

// What `feed` makes a relay with `prefix` write, read back from a file.
std::string relayed(const std::string& prefix, const std::function<void(LineRelay&)>& feed) {
  ScratchDir dir;
  std::string path = (dir / "out").string();
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EXPECT_GE(fd, 0);
  LineRelay relay(fd, prefix);
  feed(relay);
  close(fd);
  return testing::read_file(path);
}

void append(LineRelay& relay, const std::string& text) { relay.append(text.data(), text.size()); }

TEST(LineRelay, PrefixesEveryLine) {
  EXPECT_EQ(relayed("[rank 1] ", [](LineRelay& relay) { append(relay, "a\nbb\n\nccc\n"); }),
            "[rank 1] a\n[rank 1] bb\n[rank 1] \n[rank 1] ccc\n");
}

TEST(LineRelay, JoinsLinesSplitAcrossReads) {
  EXPECT_EQ(relayed("> ",
                    [](LineRelay& relay) {
                      append(relay, "hel");
                      append(relay, "lo wo");
                      append(relay, "rld\nsecond");
                      append(relay, " line\n");
                    }),
            "> hello world\n> second line\n");
}

TEST(LineRelay, HoldsAPartialLineUntilItEndsOrTheStreamDoes) {
  EXPECT_EQ(relayed("> ", [](LineRelay& relay) { append(relay, "no newline yet"); }), "");
  EXPECT_EQ(relayed("> ",
                    [](LineRelay& relay) {
                      append(relay, "done\nlast words");
                      relay.finish();
                      relay.finish();
                    }),
            "> done\n> last words\n");
}

// A rank that never ends its line must not grow the relay without bound: past the limit, the
// text so far goes out as a line of its own, and nothing is lost.
TEST(LineRelay, SplitsLinesLongerThanTheLimit) {
  const std::string chunk(1000, 'x');
  const size_t chunks = kMaxRelayedLineBytes / chunk.size() + 5;
  std::string output = relayed("> ", [&](LineRelay& relay) {
    for (size_t i = 0; i < chunks; ++i) append(relay, chunk);
    append(relay, "tail\n");
  });
  std::istringstream lines(output);
  std::string line, joined;
  int count = 0;
  while (std::getline(lines, line)) {
    ASSERT_EQ(line.substr(0, 2), "> ");
    EXPECT_LE(line.size(), 2 + kMaxRelayedLineBytes + chunk.size());
    joined += line.substr(2);
    ++count;
  }
  EXPECT_EQ(count, 2);
  EXPECT_EQ(joined, std::string(chunks * chunk.size(), 'x') + "tail");
}

TEST(LineRelay, AFailedWriteIsAnError) {
  LineRelay relay(-1, "");
  EXPECT_THROW(append(relay, "line\n"), Error);
}

}  // namespace
}  // namespace strait::launch
