// The tokenizers of engine/text_codec.h.
#include "engine/text_codec.h"

#include <memory>

#include "base/error.h"
#include "data/tokenize.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2_TOKENIZER 1
#endif

namespace unipool {

namespace {

const char* const kEndOfText = "<|endoftext|>";

TextCodec bytes_codec() {
  TextCodec t;
  t.name = "bytes";
  t.eod = data::kBytesEod;
  t.encode = [](const std::string& text) {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char ch : text) ids.push_back(static_cast<int32_t>(ch));
    return ids;
  };
  // Raw bytes, valid UTF-8 or not: a multi-byte character arrives over several tokens.
  t.decode = [](int32_t id) {
    return id == data::kBytesEod ? std::string(kEndOfText) : std::string(1, static_cast<char>(id));
  };
  return t;
}

TextCodec gpt2_codec() {
#ifdef UNIPOOL_HAVE_GPT2_TOKENIZER
  using data::Gpt2Tokenizer;
  auto tok = std::make_shared<Gpt2Tokenizer>(Gpt2Tokenizer::load(Gpt2Tokenizer::default_dir()));
  TextCodec t;
  t.name = "gpt2";
  t.eod = Gpt2Tokenizer::kEot;
  t.encode = [tok](const std::string& text) { return tok->encode(text); };
  t.decode = [tok](int32_t id) {
    return id == Gpt2Tokenizer::kEot ? std::string(kEndOfText) : tok->decode(&id, 1);
  };
  return t;
#else
  throw Error(
      "the GPT-2 tokenizer is not built in (data/gpt2_tokenizer.h is missing in this build); "
      "a vocab_size 50257 model needs it");
#endif
}

}  // namespace

TextCodec make_codec(const std::string& name, const ModelConfig& m) {
  std::string which = name;
  if (which == "auto") {
    if (m.vocab_size == data::kBytesVocab) {
      which = "bytes";
    } else if (m.vocab_size == 50257) {
      which = "gpt2";
    } else {
      throw Error("--tokenizer auto: no tokenizer has model.vocab_size " +
                  std::to_string(m.vocab_size) + " (bytes: 257, gpt2: 50257)");
    }
  }
  if (which == "bytes") {
    check(m.vocab_size == data::kBytesVocab, "--tokenizer bytes: the model's vocab_size is " +
                                                 std::to_string(m.vocab_size) +
                                                 ", the byte tokenizer's 257");
    return bytes_codec();
  }
  if (which == "gpt2") {
    check(m.vocab_size == 50257, "--tokenizer gpt2: the model's vocab_size is " +
                                     std::to_string(m.vocab_size) + ", GPT-2's 50257");
    return gpt2_codec();
  }
  throw Error("--tokenizer: '" + name + "' is not one of auto, bytes, gpt2");
}

}  // namespace unipool
