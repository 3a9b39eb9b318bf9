#pragma once
// Chat templates: the prompt a chat model expects for a list of messages. Models ship a
// Jinja template (tokenizer.chat_template in a GGUF); Troupe recognizes the ChatML family
// (<|im_start|>role\ncontent<|im_end|>\n, as SmolLM2 and Qwen use) rather than running
// Jinja: the default system message, if the template adds one, is read from it. Any other
// template is an error that says so.

#include <string>
#include <vector>

#include "core/error.h"

namespace troupe {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

Expected<std::string> apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt = true);

}  // namespace troupe
