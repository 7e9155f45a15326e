// The zero-shot tasks of engine/tasks.h: their documents, as lm-evaluation-harness v0.4.5 turns
// them into requests (lm_eval/tasks/<task>/*.yaml and their utils, zero-shot, no description).
#include "engine/tasks.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_depth.h"
#include "base/json_fields.h"

namespace unipool {

namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8 as Python's str sees it: code points.

// The code points of valid UTF-8 text (a byte that starts no valid sequence counts as one).
std::vector<int32_t> decode_utf8(const std::string& text) {
  std::vector<int32_t> cps;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {
      cp = *p;
      n = 1;
    }
    cps.push_back(cp);
    p += n;
    left -= n;
  }
  return cps;
}

std::string encode_utf8(const std::vector<int32_t>& cps, size_t begin = 0,
                        size_t end = std::string::npos) {
  std::string out;
  end = std::min(end, cps.size());
  for (size_t i = begin; i < end; ++i) {
    utf8proc_uint8_t buf[4];
    const utf8proc_ssize_t n = utf8proc_encode_char(cps[i], buf);
    out.append(reinterpret_cast<const char*>(buf), size_t(n));
  }
  return out;
}

// Python's str.isspace(): the characters of Unicode category Zs or bidirectional class WS, B, S.
bool python_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// s[-n:] in code points.
std::string last_chars(const std::string& s, size_t n) {
  const std::vector<int32_t> cps = decode_utf8(s);
  return encode_utf8(cps, cps.size() > n ? cps.size() - n : 0);
}

// Every non-overlapping `from` replaced by `to`, left to right (str.replace).
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size())
    out += s.substr(i, j - i) + to;
  return out + s.substr(i);
}

// ---------------------------------------------------------------------------------------------
// Documents: checked field reads whose errors name the place and, when the document is another
// task's, that task.

// The task whose characteristic fields a document has ("" when none).
std::string looks_like(const json& doc) {
  if (!doc.is_object()) return "";
  auto has = [&](std::initializer_list<const char*> keys) {
    return std::all_of(keys.begin(), keys.end(), [&](const char* k) { return doc.contains(k); });
  };
  if (has({"ctx_a", "endings"})) return "hellaswag";
  if (has({"question", "answerKey"})) return "arc_easy or arc_challenge";
  if (has({"goal", "sol1"})) return "piqa";
  if (has({"sentence", "option1"})) return "winogrande";
  if (has({"article"})) return "race";
  if (has({"context", "choices", "gold"})) return "multiple_choice";
  if (has({"text"})) return "lambada";
  return "";
}

class Doc {
 public:
  Doc(const json& doc, const std::string& task, const std::string& where)
      : doc_(doc), task_(task), where_(where) {
    if (!doc.is_object()) fail("a " + task + " document must be a JSON object");
  }

  [[noreturn]] void fail(const std::string& what) const { throw Error(where_ + ": " + what); }

  const json& at(const json& obj, const std::string& key) const {
    if (obj.is_object() && obj.contains(key)) return obj.at(key);
    std::string msg = task_ + ": no field \"" + key + "\"";
    const std::string other = looks_like(doc_);
    if (!other.empty() && other.find(task_) == std::string::npos)
      msg += " (this is a " + other + " document: is the file of another task?)";
    fail(msg);
  }
  const json& at(const std::string& key) const { return at(doc_, key); }

  std::string string(const json& v, const std::string& name) const {
    if (!v.is_string()) fail(task_ + ": \"" + name + "\" must be a string");
    return v.get<std::string>();
  }
  std::string string(const std::string& key) const { return string(at(key), key); }

  std::vector<std::string> strings(const json& v, const std::string& name) const {
    if (!v.is_array()) fail(task_ + ": \"" + name + "\" must be an array of strings");
    std::vector<std::string> out;
    for (const json& x : v) out.push_back(string(x, name + "[]"));
    return out;
  }

  // An integer label, given as a JSON integer or a string of digits (Hugging Face's "3").
  int label(const json& v, const std::string& name) const {
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (x >= 0 && x < (1 << 30)) return int(x);
    } else if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s.empty())
        fail(task_ + ": \"" + name +
             "\" is empty (a test split without labels? use the validation split)");
      if (s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(c); }))
        return std::stoi(s);
    }
    fail(task_ + ": \"" + name + "\" must be a label index, not " + describe_json(v));
  }

  // The multiple-choice example: one context, continuation " " + choice, gold checked.
  TaskExample choices(const std::string& context, const std::vector<std::string>& choices,
                      int gold) const {
    if (choices.empty()) fail(task_ + ": no choices");
    TaskExample e;
    for (size_t i = 0; i < choices.size(); ++i) {
      if (choices[i].empty()) fail(task_ + ": choice " + std::to_string(i) + " is empty");
      e.choices.push_back(TaskChoice{context, " " + choices[i], python_len(choices[i])});
    }
    if (gold < 0 || gold >= int(choices.size()))
      fail(task_ + ": the label " + std::to_string(gold) + " is outside the " +
           std::to_string(choices.size()) + " choices");
    e.gold = gold;
    return e;
  }

  bool has(const std::string& key) const { return doc_.contains(key); }
  const std::string& where() const { return where_; }

 private:
  const json& doc_;
  const std::string& task_;
  const std::string& where_;
};

// ---------------------------------------------------------------------------------------------
// The tasks (lm_eval/tasks/<task>/ of the harness).

// hellaswag.yaml + utils.process_docs.
TaskExample hellaswag(const Doc& d) {
  const std::string ctx = d.string("ctx_a") + " " + python_capitalize(d.string("ctx_b"));
  std::vector<std::string> endings = d.strings(d.at("endings"), "endings");
  for (std::string& e : endings) e = hellaswag_preprocess(e);
  return d.choices(hellaswag_preprocess(d.string("activity_label") + ": " + ctx), endings,
                   d.label(d.at("label"), "label"));
}

// arc_easy.yaml: "Question: {{question}}\nAnswer:", choices.text, gold = choices.label's index of
// answerKey. The original AI2 layout nests the question: {"stem", "choices": [{"text", "label"}]}.
TaskExample arc(const Doc& d) {
  const json& q = d.at("question");
  std::string question;
  std::vector<std::string> texts, labels;
  if (q.is_object()) {
    question = d.string(d.at(q, "stem"), "question.stem");
    const json& cs = d.at(q, "choices");
    if (!cs.is_array()) d.fail("arc: \"question.choices\" must be an array");
    for (const json& c : cs) {
      texts.push_back(d.string(d.at(c, "text"), "question.choices[].text"));
      labels.push_back(d.string(d.at(c, "label"), "question.choices[].label"));
    }
  } else {
    question = d.string(q, "question");
    const json& cs = d.at("choices");
    texts = d.strings(d.at(cs, "text"), "choices.text");
    labels = d.strings(d.at(cs, "label"), "choices.label");
    if (labels.size() != texts.size())
      d.fail("arc: \"choices.text\" and \"choices.label\" differ in length");
  }
  const std::string key = d.string("answerKey");
  const auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) d.fail("arc: the answerKey \"" + key + "\" is not one of the labels");
  return d.choices("Question: " + question + "\nAnswer:", texts, int(it - labels.begin()));
}

// piqa.yaml: "Question: {{goal}}\nAnswer:", [sol1, sol2], label.
TaskExample piqa(const Doc& d) {
  return d.choices("Question: " + d.string("goal") + "\nAnswer:",
                   {d.string("sol1"), d.string("sol2")}, d.label(d.at("label"), "label"));
}

// winogrande (preprocess_winogrande.py): the sentence up to the blank with each option is the
// context ("multiple input"), the rest after the blank, stripped, the one continuation; acc_norm
// would divide by the context's length (the harness's choice string).
TaskExample winogrande(const Doc& d) {
  const std::string sentence = d.string("sentence");
  const size_t blank = sentence.find('_');
  if (blank == std::string::npos) d.fail("winogrande: the sentence has no blank \"_\"");
  const std::string prefix = sentence.substr(0, blank);
  const std::string rest = python_strip(sentence.substr(blank + 1));
  const json& answer = d.at("answer");
  int gold = -1;
  if (answer == "1" || answer == 1) gold = 0;
  if (answer == "2" || answer == 2) gold = 1;
  if (gold < 0)
    d.fail("winogrande: \"answer\" must be \"1\" or \"2\", not " + describe_json(answer));
  TaskExample e;
  for (const char* key : {"option1", "option2"}) {
    const std::string option = d.string(key);
    if (option.empty()) d.fail(std::string("winogrande: \"") + key + "\" is empty");
    e.choices.push_back(TaskChoice{prefix + option, " " + rest, python_len(prefix + option)});
  }
  e.gold = gold;
  return e;
}

// lambada_openai.yaml: context " ".join(text.split(" ")[:-1]), continuation " " + the last word.
TaskExample lambada(const Doc& d) {
  const std::string text = d.string("text");
  const size_t space = text.rfind(' ');
  if (space == std::string::npos || space + 1 == text.size())
    d.fail("lambada: the text has no last word after a space");
  TaskExample e;
  const std::string word = text.substr(space);  // " " + last word
  e.choices.push_back(TaskChoice{text.substr(0, space), word, python_len(word)});
  e.gold = 0;
  return e;
}

// multiple_choice: {"context", "choices", "gold"}, scored as the harness scores its tasks.
TaskExample multiple_choice(const Doc& d) {
  return d.choices(d.string("context"), d.strings(d.at("choices"), "choices"),
                   d.label(d.at("gold"), "gold"));
}

// race (preprocess_race.py, task version 2.0 of harness v0.4.5 to v0.4.11): "Article: " + article
// + "\n\n", then each earlier problem of the document with its answer ("Question: q\nAnswer:
// a\n", or for a question ending in "  _  ." its last five characters followed by the answer),
// then the last problem's question; its four options are the choices. problems: a Python literal
// (EleutherAI/race), a JSON array, or the original RACE file's parallel arrays questions / options
// / answers.
TaskExample race(const Doc& d) {
  struct Problem {
    std::string question;
    std::vector<std::string> options;
    int answer = 0;
  };
  auto answer_index = [&](const json& v) {
    const std::string a = d.string(v, "answer");
    if (a.size() != 1 || a[0] < 'A' || a[0] > 'D')
      d.fail("race: an answer must be one of A, B, C, D, not \"" + a + "\"");
    return a[0] - 'A';
  };
  std::vector<Problem> problems;
  const std::string article = d.string("article");
  if (!d.has("problems") && d.has("questions")) {  // the original RACE file
    const std::vector<std::string> questions = d.strings(d.at("questions"), "questions");
    const json& options = d.at("options");
    const json& answers = d.at("answers");
    if (!options.is_array() || !answers.is_array() || options.size() != questions.size() ||
        answers.size() != questions.size())
      d.fail("race: \"questions\", \"options\" and \"answers\" must be arrays of one length");
    for (size_t i = 0; i < questions.size(); ++i)
      problems.push_back(
          {questions[i], d.strings(options[i], "options[]"), answer_index(answers[i])});
  } else {
    const json& field = d.at("problems");
    const json list = field.is_string() ? parse_python_literal(field.get<std::string>(),
                                                               d.where() + ": race: \"problems\"")
                                        : field;
    if (!list.is_array()) d.fail("race: \"problems\" must be a list");
    for (const json& p : list)
      problems.push_back({d.string(d.at(p, "question"), "problems[].question"),
                          d.strings(d.at(p, "options"), "problems[].options"),
                          answer_index(d.at(p, "answer"))});
  }
  if (problems.empty()) d.fail("race: no problems");
  for (const Problem& p : problems)
    if (int(p.options.size()) < 4 || p.answer >= int(p.options.size()))
      d.fail("race: a problem needs four options");
  std::string text = "Article: " + article + "\n\n";
  for (size_t i = 0; i + 1 < problems.size(); ++i) {
    const Problem& p = problems[i];
    const std::string& answer = p.options[size_t(p.answer)];
    if (last_chars(p.question, 6) == "  _  .") {
      text += last_chars(p.question, 5) + answer + "\n";
    } else {
      text += "Question: " + p.question + "\nAnswer: " + answer + "\n";
    }
  }
  const Problem& last = problems.back();
  text += last.question;
  return d.choices(text, std::vector<std::string>(last.options.begin(), last.options.begin() + 4),
                   last.answer);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"hellaswag", "arc_easy",       "arc_challenge",
                                                 "piqa",      "winogrande",     "lambada",
                                                 "race",      "multiple_choice"};
  return names;
}

bool is_loglikelihood_task(const std::string& task) {
  return task == "lambada";
}

void check_task_name(const std::string& task) {
  const std::vector<std::string>& names = task_names();
  if (std::find(names.begin(), names.end(), task) != names.end()) return;
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  throw Error("--task: '" + task + "' is not one of " + list);
}

std::string python_strip(const std::string& text, bool left) {
  const std::vector<int32_t> cps = decode_utf8(text);
  size_t a = 0, b = cps.size();
  while (left && a < b && python_space(cps[a])) ++a;
  while (b > a && python_space(cps[b - 1])) --b;
  return encode_utf8(cps, a, b);
}

std::string python_capitalize(const std::string& text) {
  std::vector<int32_t> cps = decode_utf8(text);
  for (size_t i = 0; i < cps.size(); ++i)
    cps[i] = i == 0 ? utf8proc_totitle(cps[i]) : utf8proc_tolower(cps[i]);
  return encode_utf8(cps);
}

int64_t python_len(const std::string& text) {
  return int64_t(decode_utf8(text).size());
}

std::string hellaswag_preprocess(const std::string& text) {
  const std::string t = replace_all(python_strip(text), " [title]", ". ");
  std::string unbracketed;  // re.sub("\\[.*?\\]", "", t): "." stops at a newline
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      const size_t close = t.find_first_of("]\n", i + 1);
      if (close != std::string::npos && t[close] == ']') {
        i = close;
        continue;
      }
    }
    unbracketed += t[i];
  }
  return replace_all(unbracketed, "  ", " ");
}

namespace {

// ast.literal_eval's grammar, the part a dataset's repr() uses: [..], (..), {..}, '..' / ".."
// with Python's escapes (an optional u prefix; adjacent literals concatenate), numbers, True,
// False, None.
class PythonLiteral {
 public:
  PythonLiteral(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  json parse() {
    json v = value(0);
    space();
    if (i_ != s_.size()) fail("unexpected text after the value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(where_ + ": not a Python literal: " + what + " at character " + std::to_string(i_));
  }
  void space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    space();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool word(const char* w) {
    const size_t n = std::char_traits<char>::length(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }

  json value(int depth) {
    if (depth > kMaxJsonDepth) fail("nested too deeply");
    space();
    if (i_ >= s_.size()) fail("unexpected end");
    const char c = s_[i_];
    if (c == '[' || c == '(') {
      const char close = c == '[' ? ']' : ')';
      ++i_;
      json list = json::array();
      while (!eat(close)) {
        list.push_back(value(depth + 1));
        if (!eat(',')) {
          if (!eat(close)) fail(std::string("expected ',' or '") + close + "'");
          break;
        }
      }
      return list;
    }
    if (c == '{') {
      ++i_;
      json dict = json::object();
      while (!eat('}')) {
        const json key = value(depth + 1);
        if (!key.is_string()) fail("a dict key must be a string");
        if (!eat(':')) fail("expected ':'");
        dict[key.get<std::string>()] = value(depth + 1);
        if (!eat(',')) {
          if (!eat('}')) fail("expected ',' or '}'");
          break;
        }
      }
      return dict;
    }
    if (c == '\'' || c == '"' ||
        ((c == 'u' || c == 'U') && i_ + 1 < s_.size() &&
         (s_[i_ + 1] == '\'' || s_[i_ + 1] == '"'))) {
      std::string text;
      do {
        if (s_[i_] == 'u' || s_[i_] == 'U') ++i_;
        text += string();
        space();
      } while (i_ < s_.size() && (s_[i_] == '\'' || s_[i_] == '"'));
      return text;
    }
    if (word("True")) return true;
    if (word("False")) return false;
    if (word("None")) return nullptr;
    const size_t start = i_;
    if (s_[i_] == '-' || s_[i_] == '+') ++i_;
    while (i_ < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[i_])) || std::strchr(".eE+-_", s_[i_])))
      ++i_;
    const json number = json::parse(s_.substr(start, i_ - start), nullptr, false);
    if (i_ == start || number.is_discarded() || !number.is_number()) {
      i_ = start;
      fail("unexpected character");
    }
    return number;
  }

  // One quoted string (single or triple quotes) with its escapes decoded to UTF-8.
  std::string string() {
    const char q = s_[i_];
    const bool triple = s_.compare(i_, 3, std::string(3, q)) == 0;
    i_ += triple ? 3 : 1;
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_];
      if (c == q && (!triple || s_.compare(i_, 3, std::string(3, q)) == 0)) {
        i_ += triple ? 3 : 1;
        return out;
      }
      if (c == '\n' && !triple) fail("newline in a string");
      ++i_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated string");
      const char e = s_[i_++];
      switch (e) {
        case '\n':
          break;  // line continuation
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
          code_point(hex(2), out);
          break;
        case 'u':
          code_point(hex(4), out);
          break;
        case 'U':
          code_point(hex(8), out);
          break;
        default:
          if (e >= '0' && e <= '7') {  // up to three octal digits
            int v = e - '0';
            for (int k = 0; k < 2 && i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '7'; ++k)
              v = v * 8 + (s_[i_++] - '0');
            code_point(v, out);
          } else {  // an unknown escape keeps its backslash, as Python does
            out += '\\';
            out += e;
          }
      }
    }
  }
  int32_t hex(int digits) {
    int32_t v = 0;
    for (int k = 0; k < digits; ++k, ++i_) {
      if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_])))
        fail("bad hexadecimal escape");
      const char h = s_[i_];
      v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
  }
  void code_point(int32_t cp, std::string& out) const {
    if (!utf8proc_codepoint_valid(cp)) cp = 0xFFFD;  // a lone surrogate cannot be UTF-8
    out += encode_utf8({cp});
  }

  const std::string& s_;
  const std::string& where_;
  size_t i_ = 0;
};

}  // namespace

json parse_python_literal(const std::string& text, const std::string& where) {
  return PythonLiteral(text, where).parse();
}

TaskExample make_task_example(const std::string& task, const json& doc, const std::string& where) {
  check_task_name(task);
  const Doc d(doc, task, where);
  TaskExample e;
  if (task == "hellaswag") {
    e = hellaswag(d);
  } else if (task == "arc_easy" || task == "arc_challenge") {
    e = arc(d);
  } else if (task == "piqa") {
    e = piqa(d);
  } else if (task == "winogrande") {
    e = winogrande(d);
  } else if (task == "lambada") {
    e = lambada(d);
  } else if (task == "race") {
    e = race(d);
  } else {
    e = multiple_choice(d);
  }
  e.where = where;
  return e;
}

std::vector<TaskExample> read_task_file(const std::string& task, const std::string& path,
                                        int limit) {
  check_task_name(task);  // before the file is read
  std::vector<TaskExample> examples;
  const std::string text = read_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw Error(path + ": the file is empty");
  auto parse = [&](const std::string& json_text, const std::string& where) {
    check_json_depth(json_text, where);
    try {
      return json::parse(json_text);
    } catch (const json::parse_error& e) {
      throw Error(where + ": not JSON (" + std::string(e.what()) + ")");
    }
  };
  auto full = [&] { return limit > 0 && int(examples.size()) >= limit; };
  if (text[first] == '[') {  // one JSON array of documents
    const json docs = parse(text, path);
    for (size_t i = 0; i < docs.size() && !full(); ++i)
      examples.push_back(make_task_example(task, docs[i], path + ": element " + std::to_string(i)));
  } else {  // JSON lines
    size_t begin = 0;
    for (int line = 1; begin < text.size() && !full(); ++line) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      const std::string row = text.substr(begin, end - begin);
      begin = end + 1;
      if (row.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path + ":" + std::to_string(line);
      examples.push_back(make_task_example(task, parse(row, where), where));
    }
  }
  if (examples.empty()) throw Error(path + ": no documents");
  return examples;
}

}  // namespace unipool
