#include "strait/data/brown.h"

#include <gtest/gtest.h>

namespace strait::data {
namespace {

TEST(Brown, RecognisesCorpusFileNames) {
  for (const char* name : {"ca01", "cb02", "cr99", "cn29"}) EXPECT_TRUE(is_brown_file_name(name)) << name;
  for (const char* name : {"README", "CONTENTS", "cats.txt", "cs01", "Ca01", "ca1", "ca012", "ca01.txt", "caa1"}) {
    EXPECT_FALSE(is_brown_file_name(name)) << name;
  }
}

TEST(Brown, DetectsTaggedText) {
  EXPECT_TRUE(looks_like_brown("\n\n\tThe/at Fulton/np-tl County/nn-tl ``/`` no/at ''/'' ,/, ./.\n"));
  EXPECT_FALSE(looks_like_brown("The cat sat on the mat, and/or the dog did.\n"));
  EXPECT_FALSE(looks_like_brown("Path/To/File Another/Upper Case/TAGS here\n"));
  EXPECT_FALSE(looks_like_brown("Hello ./. ,/, world and/or more text here\n"));
  EXPECT_FALSE(looks_like_brown(""));
}

TEST(Brown, DetagsIntoReadableParagraphs) {
  std::string tagged =
      "\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' ,/, ./.\n"
      "It/pps was/bedz (/( mostly/rb )/) fine/jj ;/. really/rb :/: yes/rb ?/. no/rb !/.\n"
      "\n\n"
      "\t``/`` Half/abn of/in 1/2/cd ''/'' ,/, he/pps said/vbd ./.\n\n";
  EXPECT_EQ(detag_brown(tagged),
            "The Fulton County said \"no evidence\",. It was (mostly) fine; really: yes? no!\n"
            "\"Half of 1/2\", he said.");
}

}  // namespace
}  // namespace strait::data
