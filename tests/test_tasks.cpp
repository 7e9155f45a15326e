// The zero-shot tasks' files and requests (engine/tasks.h) and the metric arithmetic
// (engine/zero_shot.h), without a model: each task's fixture in its published layout
// (tests/fixtures/tasks/, written by hand) against the prompts lm-evaluation-harness v0.4.5 builds
// for it (written out here: its preprocessing functions run on these documents give exactly these
// strings), Python's string methods, RACE's Python literals, bad input named by file and line, the
// harness's tokenisation of a pair, and acc / acc_norm / the llm.c choice / stderr / perplexity on
// known numbers.
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/tasks.h"
#include "engine/zero_shot.h"
#include "tests/catch.h"
#include "tests/data_fixtures.h"
#include "tests/errors.h"
#include "tests/tempdir.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

namespace {

// One example's expected requests: one context for every choice (or one per choice) and one
// continuation for every choice (or one for all), the lengths acc_norm divides by, the gold.
struct Expected {
  std::vector<std::string> contexts, continuations;
  std::vector<int64_t> chars;
  int gold;
};

void check_example(const TaskExample& e, const Expected& x) {
  INFO(e.where);
  REQUIRE(e.choices.size() == x.chars.size());
  for (size_t c = 0; c < e.choices.size(); ++c) {
    CHECK(e.choices[c].context == x.contexts[x.contexts.size() == 1 ? 0 : c]);
    CHECK(e.choices[c].continuation == x.continuations[x.continuations.size() == 1 ? 0 : c]);
    CHECK(e.choices[c].chars == x.chars[c]);
  }
  CHECK(e.gold == x.gold);
}

void check_file(const std::string& task, const std::string& file,
                const std::vector<Expected>& expected) {
  const std::vector<TaskExample> examples = read_task_file(task, task_fixture(file));
  REQUIRE(examples.size() == expected.size());
  for (size_t i = 0; i < examples.size(); ++i) check_example(examples[i], expected[i]);
}

}  // namespace

TEST_CASE("tasks: Python's string methods and HellaSwag's preprocess", "[tasks]") {
  CHECK(python_strip(" \t a b \n\u00a0") == "a b");
  CHECK(python_strip("  a  ", /*left=*/false) == "  a");
  CHECK(python_strip("\u200b") == "\u200b");  // a zero-width space is not str.isspace()
  CHECK(python_capitalize("hello WORLD") == "Hello world");
  CHECK(python_capitalize("éCOLE") == "École");
  CHECK(python_capitalize("[step] NEED") == "[step] need");
  CHECK(python_capitalize("") == "");
  CHECK(python_len("École") == 5);
  CHECK(hellaswag_preprocess(" a [title] b ") == "a. b");
  CHECK(hellaswag_preprocess("x [header] y [step] z") == "x y z");  // "  " → " " once
  CHECK(hellaswag_preprocess("a   b") == "a  b");                   // str.replace, one pass
  CHECK(hellaswag_preprocess("a [b\nc] d") == "a [b\nc] d");        // "." stops at a newline
  CHECK(hellaswag_preprocess("a [b] [c d") == "a [c d");            // an unclosed "[" stays
}

TEST_CASE("tasks: Python literals as RACE's problems hold them", "[tasks]") {
  const json v = parse_python_literal(
      "[{'a': 'it\\'s', \"b\": \"say \\\"hi\\\"\", 'c': (1, -2.5, True, None)}, u'\\u00e9\\x41\\n'"
      " 'x', ]",
      "here");
  REQUIRE(v.is_array());
  REQUIRE(v.size() == 2);
  CHECK(v[0]["a"] == "it's");
  CHECK(v[0]["b"] == "say \"hi\"");
  CHECK(v[0]["c"] == json::array({1, -2.5, true, nullptr}));
  CHECK(v[1] == "\u00e9A\nx");  // adjacent literals concatenate
  CHECK(contains(error_of([] { parse_python_literal("[1, 2", "race.jsonl:3"); }),
                 "race.jsonl:3: not a Python literal"));
  CHECK(contains(error_of([] { parse_python_literal("{'a': os.system}", "w"); }),
                 "not a Python literal"));
  CHECK(contains(error_of([] { parse_python_literal("'open", "w"); }), "unterminated string"));
}

TEST_CASE("tasks: each task's published layout gives the harness's requests", "[tasks]") {
  check_file("hellaswag", "hellaswag.jsonl",
             {{{"Roofing: A man climbs onto a roof with a ladder. He"},
               {" starts pulling up the old shingles.", " is eating a sandwich in the kitchen.",
                " swims across the pool.", " paints the sky green."},
               {35, 36, 22, 21},
               0},
              {{"Home and Garden: How to plant tulips. Choose a sunny spot. tulips need light."},
               {"  Dig a hole twice as deep.", " Water them. weekly.",
                " Plant them upside down [sic.", " Keep them in the dark."},
               {26, 19, 28, 22},
               1},
              {{"Cooking eggs: A woman cracks an egg into a pan. Éric watches as she"},
               {" throws the pan away.", " drinks the oil.", " stirs the egg with a fork.",
                " sings to the egg."},
               {20, 15, 26, 17},
               2}});  // llm.c's layout: an integer label
  const std::vector<Expected> arc = {
      {{"Question: Which of these is a gas at room temperature?\nAnswer:"},
       {" iron", " oxygen", " salt", " wood"},
       {4, 6, 4, 4},
       1},
      {{"Question: What do plants need to make food?\nAnswer:"},
       {" sunlight", " sand", " noise"},
       {8, 4, 5},
       0},
      {{"Question: Which planet is closest to the Sun?\nAnswer:"},  // the original AI2 layout
       {" Venus", " Mercury", " Mars", " Earth"},
       {5, 7, 4, 5},
       1}};
  check_file("arc_easy", "arc_easy.jsonl", arc);
  check_file("arc_challenge", "arc_easy.jsonl", arc);  // one layout, one prompt
  check_file("piqa", "piqa.jsonl",
             {{{"Question: How do I keep bread fresh?\nAnswer:"},
               {" Store it in a sealed bag.", " Store it in a bowl of water."},
               {25, 28},
               0},
              {{"Question: To dry wet shoes,\nAnswer:"},
               {" put them in the freezer overnight.", " stuff them with newspaper."},
               {34, 26},
               1}});
  check_file("winogrande", "winogrande.jsonl",  // partial scoring: one context per option
             {{{"The cup did not fit in the box because the cup",
                "The cup did not fit in the box because the box"},
               {" was too big."},
               {46, 46},
               0},
              {{"Anna gave Maria a book because Anna", "Anna gave Maria a book because Maria"},
               {" wanted to share it."},
               {35, 36},
               0}});
  check_file("lambada", "lambada.jsonl",
             {{{"She poured the tea and handed him the"}, {" cup"}, {4}, 0},
              {{"He looked at the map twice.  Then he finally found the "}, {" station"}, {8}, 0}});
  check_file(
      "race", "race.jsonl",
      {{{"Article: Tom lives in a small town. He walks to school every day.\n\nQuestion: How does "
         "Tom go to school?\nAnswer: On foot\n _  .small\nWhere does Tom walk to every day?"},
        {" Tom", " a bus", " school", " a town"},
        {3, 5, 6, 6},
        2},
       {{"Article: It rained all day.\n\nThe day was «very»  _  ."},
        {" sunny", " windy", " snowy", " wet"},
        {5, 5, 5, 3},
        3}});
  check_file("multiple_choice", "multiple_choice.jsonl",
             {{{"2 + 2 ="}, {" 4", " 5", " 22"}, {1, 1, 2}, 0},
              {{"The capital of France is "}, {" Paris", " Rome"}, {5, 4}, 0}});
  // --limit, and where each example came from (the blank line 2 is skipped)
  const std::vector<TaskExample> two =
      read_task_file("multiple_choice", task_fixture("multiple_choice.jsonl"), 2);
  REQUIRE(two.size() == 2);
  CHECK(two[1].where == task_fixture("multiple_choice.jsonl") + ":3");
  CHECK(read_task_file("piqa", task_fixture("piqa.jsonl"), 1).size() == 1);
}

TEST_CASE("tasks: the original RACE layout and a JSON array read like their JSON-lines forms",
          "[tasks]") {
  TempDir tmp;
  const std::string original = tmp / "race_original.jsonl";
  write_file_atomic(
      original,
      R"({"answers": ["B", "C"], "options": [["By bus", "On foot", "By car", "By bike"],)"
      R"( ["Tom", "a bus", "school", "a town"]], "questions": ["How does Tom go to)"
      R"( school?", "Where does Tom walk to every day?"], "article": "Tom walks.", "id": "x"})"
      "\n");
  const TaskExample e = read_task_file("race", original).at(0);
  CHECK(e.choices[0].context ==
        "Article: Tom walks.\n\nQuestion: How does Tom go to school?\nAnswer: On foot\nWhere does "
        "Tom walk to every day?");
  CHECK(e.gold == 2);
  const std::string array = tmp / "piqa.json";
  write_file_atomic(array, "[" +
                               read_file(task_fixture("piqa.jsonl"))
                                   .replace(read_file(task_fixture("piqa.jsonl")).find('\n'), 1, ",") +
                               "]");
  const std::vector<TaskExample> a = read_task_file("piqa", array);
  const std::vector<TaskExample> l = read_task_file("piqa", task_fixture("piqa.jsonl"));
  REQUIRE(a.size() == 2);
  CHECK(a[1].choices[1].continuation == l[1].choices[1].continuation);
  CHECK(a[1].where == array + ": element 1");
}

TEST_CASE("tasks: bad input is an error naming the file and the line", "[tasks]") {
  TempDir tmp;
  auto error = [&](const std::string& task, const std::string& text) {
    const std::string path = tmp / "bad.jsonl";
    write_file_atomic(path, text);
    return error_of([&] { read_task_file(task, path); });
  };
  const std::string at2 = tmp / "bad.jsonl:2";
  const std::string good = R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 0})";
  std::string e = error("piqa", good + "\n" + R"({"goal": "g", "sol1": "a", "label": 0})");
  CHECK(contains(e, at2 + ": piqa: no field \"sol2\""));
  e = error("piqa", good + "\n" + R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 2})");
  CHECK(contains(e, at2 + ": piqa: the label 2 is outside the 2 choices"));
  e = error("piqa", good + "\n" + R"({"goal": "g", "sol1": "", "sol2": "b", "label": 0})");
  CHECK(contains(e, at2 + ": piqa: choice 0 is empty"));
  const std::string mc = R"({"context": "c", "choices": ["a"], "gold": 0})";
  e = error("multiple_choice", mc + "\n" + R"({"context": "c", "choices": ["a"], "gold": -1})");
  CHECK(contains(e, at2));
  CHECK(contains(e, "-1"));
  e = error("hellaswag", read_file(task_fixture("arc_easy.jsonl")));  // a file of another task
  CHECK(contains(e, tmp / "bad.jsonl:1: hellaswag: no field"));
  CHECK(contains(e, "this is a arc_easy or arc_challenge document"));
  e = error("winogrande", read_file(task_fixture("hellaswag.jsonl")));
  CHECK(contains(e, "this is a hellaswag document"));
  e = error("lambada", read_file(task_fixture("multiple_choice.jsonl")));
  CHECK(contains(e, "this is a multiple_choice document"));
  e = error("multiple_choice", mc + "\n{\"context\": \"q\", ");
  CHECK(contains(e, at2 + ": not JSON"));
  e = error("winogrande",
            R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})");
  CHECK(contains(e, ":1: winogrande: the sentence has no blank"));
  e = error("winogrande", R"({"sentence": "a _ b", "option1": "a", "option2": "b", "answer": ""})");
  CHECK(contains(e, "winogrande: \"answer\" must be \"1\" or \"2\""));
  e = error(
      "hellaswag",
      R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d"], "label": ""})");
  CHECK(contains(e, "a test split without labels"));
  e = error("arc_easy",
            R"({"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "E"})");
  CHECK(contains(e, "the answerKey \"E\" is not one of the labels"));
  e = error(
      "race",
      R"({"article": "a", "problems": "[{'answer': 'E', 'options': ['1','2','3','4'], 'question': 'q'}]"})");
  CHECK(contains(e, "race: an answer must be one of A, B, C, D"));
  e = error(
      "race",
      R"({"article": "a", "problems": "[{'answer': 'A', 'options': ['1','2'], 'question': 'q'}]"})");
  CHECK(contains(e, "race: a problem needs four options"));
  e = error("lambada", R"({"text": "oneword"})");
  CHECK(contains(e, "lambada: the text has no last word"));
  e = error("piqa", "[1, 2]");
  CHECK(contains(e, "bad.jsonl: element 0: a piqa document must be a JSON object"));
  CHECK(contains(error("piqa", "\n \n"), "the file is empty"));
  CHECK(
      contains(error_of([&] { read_task_file("piqa", tmp / "missing.jsonl"); }), "missing.jsonl"));
  CHECK(contains(error_of([&] { read_task_file("mmlu", task_fixture("piqa.jsonl")); }),
                 "--task: 'mmlu' is not one of hellaswag, arc_easy"));
}

TEST_CASE("tasks: context and continuation are tokenised separately, as the harness pairs them",
          "[tasks]") {
  const TextCodec bytes = make_codec("bytes", [] {
    ModelConfig m;
    m.vocab_size = 257;
    return m;
  }());
  auto ids = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
  TokenRequest r = tokenize_request(TaskChoice{"Answer:", " yes", 3}, bytes);
  CHECK(r.context == ids("Answer:"));
  CHECK(r.continuation == ids(" yes"));
  r = tokenize_request(TaskChoice{"Answer: \n", " yes", 3}, bytes);  // trailing space moves
  CHECK(r.context == ids("Answer:"));
  CHECK(r.continuation == ids(" \n yes"));
  r = tokenize_request(TaskChoice{"", " yes", 3}, bytes);  // an empty context: end of document
  CHECK(r.context == std::vector<int32_t>{256});
  CHECK(r.continuation == ids(" yes"));
}

TEST_CASE("tasks: acc, acc_norm, the llm.c choice, their stderr and LAMBADA's perplexity",
          "[tasks]") {
  // stderr = sample standard deviation / √n: {1, 0, 1, 1}: mean 0.75, s = 0.5, stderr 0.25.
  const Metric m = mean_with_stderr({1, 0, 1, 1});
  CHECK(m.value == 0.75);
  CHECK(m.stderr_ == Approx(0.25).epsilon(1e-12));
  CHECK(std::isnan(mean_with_stderr({1}).stderr_));
  CHECK(first_argmax({1, 3, 3, 2}) == 1);  // the first of equal maxima
  CHECK(first_argmax({-5}) == 0);

  // Two examples of two choices, gold 0 in both.
  //   example 0: loglik −6, −2; 10 and 2 characters; 4 and 1 tokens
  //     acc: −2 wins (wrong); acc_norm: −0.6 > −1 (right); per token: −1.5 > −2 (right)
  //   example 1: loglik −1, −3; 1 and 6 characters; 1 and 4 tokens
  //     acc: −1 wins (right); acc_norm: −0.5 > −1 (wrong); per token: −0.75 > −1 (wrong)
  LoadedTask t;
  t.task = "multiple_choice";
  t.examples.resize(2);
  t.examples[0].choices = {TaskChoice{"c", " x", 10}, TaskChoice{"c", " y", 2}};
  t.examples[0].gold = 0;
  t.examples[1].choices = {TaskChoice{"c", " x", 1}, TaskChoice{"c", " y", 6}};
  t.examples[1].gold = 0;
  const std::vector<std::vector<ChoiceScore>> scores = {{{-6, 4, false}, {-2, 1, true}},
                                                        {{-1, 1, true}, {-3, 4, false}}};
  const TaskMetrics r = task_metrics(t, scores);
  CHECK(r.n == 2);
  CHECK(r.acc.value == 0.5);
  CHECK(r.acc_norm.value == 0.5);
  CHECK(r.acc_per_token.value == 0.5);
  CHECK(r.acc.stderr_ == Approx(0.5).epsilon(1e-12));  // s = 0.7071, /√2
  CHECK(std::isnan(r.perplexity));
  const json j = metrics_json(r, t);
  CHECK(j["acc"] == 0.5);
  CHECK(j["acc_norm_stderr"].get<double>() == Approx(0.5));

  // LAMBADA: acc = greedy match, perplexity = exp(−mean log-likelihood over examples).
  LoadedTask l;
  l.task = "lambada";
  l.examples.resize(3);
  for (TaskExample& e : l.examples) e.choices = {TaskChoice{"c", " w", 2}};
  const TaskMetrics lm =
      task_metrics(l, {{{-1.0, 1, true}}, {{-2.0, 2, false}}, {{-3.0, 1, true}}});
  CHECK(lm.acc.value == Approx(2.0 / 3));
  CHECK(lm.perplexity == Approx(std::exp(2.0)));
  const json lj = metrics_json(lm, l);
  CHECK(lj["acc_norm"].is_null());
  CHECK(lj["perplexity"].get<double>() == Approx(std::exp(2.0)));
  CHECK(
      example_json(0, l.examples[0], {{-1.0, 1, true}}) ==
      json::parse(R"({"index": 0, "gold": 0, "loglik": [-1.0], "tokens": [1], "greedy": [true]})"));
}
