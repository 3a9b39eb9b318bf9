// ChatML prompts from SmolLM2-135M-Instruct's chat template, rendered as its Jinja says:
// a default system message when the first message is not a system one, each message as
// <|im_start|>role\ncontent<|im_end|>\n, then the assistant's turn.

#include "core/chat.h"

#include "core/gguf.h"
#include "core/tokenizer.h"
#include "test_util.h"

using namespace troupe;

TEST_CASE("chat template: SmolLM2's ChatML with its default system message", "[core][chat]") {
  auto f = GgufFile::open(test::data_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  REQUIRE(f);
  std::string tmpl = f->get_string("tokenizer.chat_template").value();
  CHECK(apply_chat_template(tmpl, {{"user", "Hi"}}).value() ==
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(apply_chat_template(tmpl, {{"system", "Be brief."}, {"user", "Hi"}}, false).value() ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  CHECK(apply_chat_template(tmpl, {{"robot", "x"}}).error().message ==
        "chat message role 'robot': expected system, user or assistant");
  CHECK(apply_chat_template("{{ messages }}", {{"user", "x"}}).error().message.rfind("unsupported chat template", 0) == 0);
}
