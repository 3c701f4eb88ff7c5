#include "strait/core/metrics.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "strait/core/error.h"
#include "error_of.h"
#include "test_support.h"

namespace strait {
namespace {

using nlohmann::json;
using testing::read_file;
using testing::ScratchDir;
using testing::write_file;

std::vector<int64_t> steps_of(const std::vector<json>& lines) {
  std::vector<int64_t> steps;
  for (const json& line : lines) steps.push_back(line.at("step").get<int64_t>());
  return steps;
}

using testing::error_of;

TEST(Metrics, WritesOneObjectPerLineAndReadsThemBack) {
  ScratchDir dir;
  {
    MetricsWriter writer(dir / "metrics.jsonl");
    writer.write({{"step", 1}, {"loss", 2.5}});
    writer.write({{"step", 2}, {"loss", 2.25}, {"note", "warmup"}});
  }
  EXPECT_EQ(read_file(dir / "metrics.jsonl"),
            "{\"loss\":2.5,\"step\":1}\n{\"loss\":2.25,\"note\":\"warmup\",\"step\":2}\n");
  std::vector<json> lines = read_metrics(dir / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], json({{"step", 1}, {"loss", 2.5}}));
  EXPECT_EQ(lines[1].at("note"), "warmup");
}

TEST(Metrics, EachLineIsOnDiskAsSoonAsItIsWritten) {
  ScratchDir dir;
  MetricsWriter writer(dir / "metrics.jsonl");
  writer.write({{"step", 7}});
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "{\"step\":7}\n");
}

TEST(Metrics, AppendsToAnExistingFile) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":1}\n");
  MetricsWriter(dir / "metrics.jsonl").write({{"step", 2}});
  EXPECT_EQ(steps_of(read_metrics(dir / "metrics.jsonl")), (std::vector<int64_t>{1, 2}));
}

TEST(Metrics, KeepThroughStepKeepsExactlyTheEarlierLines) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl",
             "{\"step\":0,\"loss\":9}\n{\"step\":5}\n{\"step\":10}\n{\"step\":11}\n{\"step\":20}\n{\"step\":3}\n");
  MetricsWriter writer(dir / "metrics.jsonl", 10);
  EXPECT_EQ(steps_of(read_metrics(dir / "metrics.jsonl")), (std::vector<int64_t>{0, 5, 10, 3}));
  writer.write({{"step", 11}, {"loss", 1}});
  EXPECT_EQ(read_file(dir / "metrics.jsonl"),
            "{\"step\":0,\"loss\":9}\n{\"step\":5}\n{\"step\":10}\n{\"step\":3}\n{\"loss\":1,\"step\":11}\n");
}

TEST(Metrics, KeepThroughStepZeroAndLinesWithoutStep) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":0}\n{\"event\":\"start\"}\n{\"step\":1}\n");
  MetricsWriter writer(dir / "metrics.jsonl", 0);
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "{\"step\":0}\n");
}

TEST(Metrics, KeepThroughStepOnAMissingFileCreatesIt) {
  ScratchDir dir;
  MetricsWriter writer(dir / "metrics.jsonl", 100);
  writer.write({{"step", 101}});
  EXPECT_EQ(steps_of(read_metrics(dir / "metrics.jsonl")), (std::vector<int64_t>{101}));
}

TEST(Metrics, KeepThroughStepRejectsAMalformedLineWithItsNumber) {
  ScratchDir dir;
  const std::string contents = "{\"step\":0}\n{\"step\":1}\n{\"step\": oops}\n{\"step\":3}\n";
  write_file(dir / "metrics.jsonl", contents);
  std::string message = error_of([&] { MetricsWriter(dir / "metrics.jsonl", 2); });
  EXPECT_NE(message.find("metrics.jsonl line 3"), std::string::npos) << message;
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), contents);
}

TEST(Metrics, KeepThroughStepRejectsANonIntegerStep) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":0}\n{\"step\":\"1\"}\n");
  std::string message = error_of([&] { MetricsWriter(dir / "metrics.jsonl", 2); });
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
  EXPECT_NE(message.find("\"step\""), std::string::npos) << message;
}

TEST(Metrics, ATornLastLineFromACrashIsDropped) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":1}\n{\"step\":2,\"lo");
  MetricsWriter(dir / "metrics.jsonl").write({{"step", 2}});
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "{\"step\":1}\n{\"step\":2}\n");

  write_file(dir / "resumed.jsonl", "{\"step\":1}\n{\"step\":2}\n{\"st");
  MetricsWriter(dir / "resumed.jsonl", 1).write({{"step", 2}});
  EXPECT_EQ(read_file(dir / "resumed.jsonl"), "{\"step\":1}\n{\"step\":2}\n");
}

TEST(Metrics, ReadReportsTheLineNumberOfAMalformedLine) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":1}\n{\"step\":2}\n\n{\"step\":3,}\n{\"step\":4}\n");
  std::string message = error_of([&] { read_metrics(dir / "metrics.jsonl"); });
  EXPECT_NE(message.find("metrics.jsonl line 4"), std::string::npos) << message;
  EXPECT_NE(message.find("malformed JSON"), std::string::npos) << message;
}

TEST(Metrics, ReadRejectsALineThatIsNotAnObject) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":1}\n[1, 2]\n");
  std::string message = error_of([&] { read_metrics(dir / "metrics.jsonl"); });
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
  EXPECT_NE(message.find("expected an object"), std::string::npos) << message;
}

TEST(Metrics, ReadRejectsATornLastLine) {
  ScratchDir dir;
  write_file(dir / "metrics.jsonl", "{\"step\":1}\n{\"step\":");
  std::string message = error_of([&] { read_metrics(dir / "metrics.jsonl"); });
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
}

TEST(Metrics, ReadOfAMissingFileNamesIt) {
  ScratchDir dir;
  std::string message = error_of([&] { read_metrics(dir / "nothing.jsonl"); });
  EXPECT_NE(message.find("nothing.jsonl"), std::string::npos) << message;
}

TEST(Metrics, WriteRejectsNonObjects) {
  ScratchDir dir;
  MetricsWriter writer(dir / "metrics.jsonl");
  EXPECT_THROW(writer.write(json::array({1, 2})), Error);
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "");
}

}  // namespace
}  // namespace strait
