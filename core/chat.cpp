#include "core/chat.h"

namespace troupe {

Expected<std::string> apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt) {
  if (tmpl.find("<|im_start|>") == std::string::npos || tmpl.find("<|im_end|>") == std::string::npos)
    return make_error("unsupported chat template (Troupe knows the ChatML family: <|im_start|>role ... <|im_end|>)");
  for (auto& m : messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      return make_error("chat message role '" + m.role + "': expected system, user or assistant");
  std::string out;
  // A template that inserts a system message when the first message is not one.
  const std::string marker = "<|im_start|>system\n";
  size_t at = tmpl.find(marker);
  if (at != std::string::npos && tmpl.find("messages[0]['role'] != 'system'") != std::string::npos &&
      (messages.empty() || messages[0].role != "system")) {
    size_t start = at + marker.size(), end = tmpl.find("<|im_end|>", start);
    if (end == std::string::npos) return make_error("chat template: the default system message is not closed");
    out += marker + tmpl.substr(start, end - start) + "<|im_end|>\n";
  }
  for (auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace troupe
