// Zero-shot tasks (`unipool eval --task`, docs/evaluation.md): each task's published file layout
// read into the log-likelihood requests lm-evaluation-harness v0.4.5 builds for it, zero-shot:
//
//   hellaswag       {"activity_label", "ctx_a", "ctx_b", "endings": [4], "label"}  (Hugging Face
//                   `hellaswag`, label a string; llm.c's / the original hellaswag_val.jsonl, label
//                   an integer)
//                   context preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
//                   choices preprocess(ending)
//   arc_easy,       {"question", "choices": {"text": [..], "label": [..]}, "answerKey"}  (Hugging
//   arc_challenge   Face `allenai/ai2_arc`; the original AI2 JSONL's {"question": {"stem",
//                   "choices": [{"text", "label"}]}, "answerKey"} too)
//                   context "Question: " + question + "\nAnswer:", choices the texts
//   piqa            {"goal", "sol1", "sol2", "label"}  context "Question: " + goal + "\nAnswer:"
//   winogrande      {"sentence", "option1", "option2", "answer": "1" | "2"}  partial scoring: the
//                   contexts are the sentence up to the blank with each option put in, the one
//                   continuation the rest of the sentence after the blank (stripped)
//   lambada         {"text"}  (`EleutherAI/lambada_openai`, OpenAI's lambada_test.jsonl)
//                   context: the words before the last (split on " "), continuation " " + the last
//                   word; scored by its greedy match (acc) and perplexity, not multiple choice
//   race            {"article", "problems": "[{'answer', 'options', 'question'}, ...]"}
//                   (`EleutherAI/race`: problems a Python literal, or a JSON array; the original
//                   RACE files' {"article", "questions", "options", "answers"} too) the last
//                   problem is asked after the earlier ones with their answers
//   multiple_choice {"context", "choices": [..], "gold"}  anything else, scored as the harness
//
// Every multiple-choice continuation is " " + the choice (the harness's target_delimiter), and
// acc_norm divides by the choice's length in characters (Unicode code points, Python's len). A file
// is JSON lines (one document per line, blank lines skipped) or one JSON array of documents.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace unipool {

// One log-likelihood request: log P(continuation | context), and what acc_norm divides it by.
struct TaskChoice {
  std::string context;
  std::string continuation;
  int64_t chars = 0;  // code points of the harness's choice string
};

struct TaskExample {
  std::string where;  // "FILE:LINE" (or "FILE: element I" in a JSON array)
  std::vector<TaskChoice> choices;
  int gold = 0;  // the right choice (0 for lambada's one continuation)
};

// The names `--task` accepts.
const std::vector<std::string>& task_names();

// Error listing the names when `task` is not one of them.
void check_task_name(const std::string& task);

// True for lambada (one continuation, scored by greedy match and perplexity); false for the
// multiple-choice tasks.
bool is_loglikelihood_task(const std::string& task);

// One document of `task` in its published layout → its requests. Error starting with `where` for a
// missing or mistyped field, a label outside the choices, an empty choice; when the document has
// the fields of another task, the message names it.
TaskExample make_task_example(const std::string& task, const nlohmann::json& doc,
                              const std::string& where);

// The examples of a file, in order, at most `limit` (0: all). Error naming the file and the line.
std::vector<TaskExample> read_task_file(const std::string& task, const std::string& path,
                                        int limit = 0);

// ---- the harness's text helpers (Python's str methods on UTF-8), exposed for the tests
// str.strip(): the characters str.isspace() knows, from both ends (left = false: str.rstrip()).
std::string python_strip(const std::string& text, bool left = true);
// str.capitalize(): the first character in title case, the rest in lower case.
std::string python_capitalize(const std::string& text);
// len(str): code points.
int64_t python_len(const std::string& text);
// HellaSwag's preprocess: strip, " [title]" → ". ", drop every "[...]" (within a line), "  " → " ".
std::string hellaswag_preprocess(const std::string& text);
// ast.literal_eval of a Python literal made of lists, tuples, dicts, strings, numbers, True, False
// and None, as JSON (RACE's problems). Error naming `where` on anything else.
nlohmann::json parse_python_literal(const std::string& text, const std::string& where);

}  // namespace unipool
