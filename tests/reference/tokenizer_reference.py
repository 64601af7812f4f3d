#!/usr/bin/env python3
"""Generate the tokenizer parity cases: tests/data/tokenizer_smollm2.jsonl.

    tokenizer_reference.py [--model GGUF] [--out JSONL] [--list]

Builds >= 2,000 test strings from a fixed seed (prose, code, numbers, whitespace runs,
many scripts and emoji, NFC/NFD forms, contractions, special-token text, control and
unassigned code points, very long words) and tokenizes each with two references:

  llama_cpp     llama-cpp-python's Llama(model, vocab_only=True).tokenize(
                text.encode(), add_bos=False, special=True)
  transformers  AutoTokenizer.from_pretrained(dir, gguf_file=name).encode(
                text, add_special_tokens=False)

and, to settle disagreements, an arbiter:

  tokenizers    the `tokenizers` library on a tokenizer.json written from the same GGUF by
                gguf_to_tokenizer_json.py (SmolLM2's own pipeline: Digits(individual) then
                ByteLevel; the pipeline the model was trained with).

Each line is {"category", "expect", "llama_cpp", "text", "transformers"}; "expect" names
the reference KVScope must equal ("both" where they agree) and is the one that equals the
arbiter. tests/data/TOKENIZER_PARITY.md explains every kind of disagreement. Output is
byte-for-byte reproducible: sorted keys, fixed separators, ASCII-only JSON.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import unicodedata

SEED = 20240917
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "tokenizer_smollm2.jsonl")


def default_model():
    if os.environ.get("KVSCOPE_MODEL"):
        return os.environ["KVSCOPE_MODEL"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "kvscope", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- test strings ----------------------------------------------------------------------

WORDS = ("the of and to in is was for that with as on by at from this be are an or it "
         "which not have has but were they their can all one more also been its after who "
         "time first new two other some when would only people than into most over model "
         "cache token attention layer memory budget eviction quantization research latency "
         "Hello World Python KVScope London January NASA GPU CUDA McDonald O'Brien "
         "naïve résumé coöperate façade jalapeño Zürich Ærøskøbing déjà-vu").split()
PUNCT = list(".,;:!?-()[]{}\"'/\\@#$%^&*_+=<>|~`")
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
                "'Re", "'Ll", "\u2019s", "\u2019t", "''s", "'x", "'", "'  s"]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<reponame>", "<file_sep>",
            "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
            "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
            "<jupyter_script>", "<empty_output>"]
NEAR_SPECIALS = ["<|im_start|", "<|im_start>", "|im_start|>", "<|IM_START|>", "< |im_start|>",
                 "<|im_start |>", "<<|im_end|>>", "<|im_start|><|im_end|>", "<|endoftext|>>", "<repo_name",
                 "<|im_end|<|im_end|>", "<|<|im_start|>|>"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\v", "\f", "\u0085", "\u00a0", "\u1680", "\u180e",
              "\u2000", "\u2003", "\u2009", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f",
              "\u3000", "\ufeff", " \t", "\t ", "\n\n", " \n ", "\n \n", "    ", "\t\t\t"]
SCRIPTS = {
    "cjk": "日本語のテキストを分割する。中文分词测试，你好世界！한국어 텍스트입니다",
    "arabic": "مرحبا بالعالم، هذا نصّ عربيٌّ مع تشكيل ٠١٢٣٤٥٦٧٨٩",
    "hebrew": "שָׁלוֹם עוֹלָם",
    "cyrillic": "Привет, мир! Съешь же ещё этих мягких французских булок",
    "greek": "Γειά σου Κόσμε, ἀρχὴ ἥμισυ παντός",
    "devanagari": "नमस्ते दुनिया। हिन्दी में लिखा पाठ ०१२३४५६७८९",
    "thai": "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "bengali": "আমি বাংলায় গান গাই ০১২৩",
    "tamil": "வணக்கம் உலகம்",
    "georgian": "გამარჯობა მსოფლიო",
    "armenian": "Բարեւ աշխարհ",
    "ethiopic": "ሰላም ዓለም",
    "vietnamese": "Tiếng Việt có dấu: Xin chào thế giới",
    "math": "∀x∈ℝ: x²≥0 ⇒ √x² = |x|, ∑ᵢ aᵢ ≤ ∞, ½ + ¼ = ¾, Ⅻ ⅷ",
    "emoji": "😀 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇫🇷 1️⃣ #️⃣ ❤️ 🧑🏿‍💻 👨🏻‍🦰 🫠",
    "fullwidth": "ＡＢＣ１２３！？ｶﾀｶﾅ",
    "digits": "٣ ۴ ५ ๖ ৭ ໘ ၉ ０ 𝟙 ¹²³ ①②③ ⅓ 〇 𐒠",
}
NEW_UNICODE = {  # letters and digits assigned in Unicode 15.0 / 15.1 / 16.0
    "u15_khojki": "\U0001123f\U00011240",
    "u15_egyptian": "\U0001342f\U00013441",
    "u15_kana": "\U0001b132\U0001b155",
    "u15_latin_ext_g": "\U0001df25\U0001df2a",
    "u15_cjk_ext_b_addition": "\U0002b739",
    "u15_cjk_ext_h": "\U00031350\U00031351\U00031352",
    "u15_kawi": "\U00011f04\U00011f05\U00011f06",
    "u15_nag_mundari": "\U0001e4d0\U0001e4d1\U0001e4f0\U0001e4f1",
    "u15_kaktovik": "\U0001d2c0\U0001d2c1\U0001d2c2",
    "u15_cyrillic_ext_d": "\U0001e030\U0001e031",
    "u15_1_cjk_ext_i": "\U0002ebf0\U0002ebf1\U0002ebf2",
    "u16_garay": "\U00010d4a\U00010d4b\U00010d50",
    "u16_cyrillic_tje": "\u1c89\u1c8a",
    "u16_digits": "\U000116d0\U000116d1\U0001ccf0\U0001ccf1",
    "u17_digits": "\U00011de0\U00011de1\U00016ff4",
    "u17_letters": "\U00011db0\U00011db1\U000323b0",
}
ODD = ["\ufffd", "\x00", "\x01", "\x07", "\x1b[31m", "\x7f", "\x80", "\x9f", "\ufeff", "\ue000", "\uf8ff",
       "\U000f0000", "\U00100000", "\u0378", "\u0379", "\U0002fffe", "\ufffe", "\uffff", "\U000e0001",
       "\U000e0041", "\u200d", "\u200c", "\u2060", "\u00ad", "\u061c", "\u202e", "\u034f", "\ufe0f",
       "\U0001f3fb", "\u0301", "\u0300\u0301\u0302", "\U0010ffff", "\u2fff", "\U0001fbff",
       # bytes SmolLM2's vocabulary has no token for: 0x04 0x06 0x13 0x14 0x16 0x1D, and the
       # UTF-8 lead bytes 0xF1 0xF2 (U+40000..U+BFFFF)
       "\x04", "\x06", "\x13", "\x14", "\x16", "\x1d", "\U00040000", "\U0005abcd", "\U0008ffff", "\U000a0000"]


def prose(rng, n_words):
    words = []
    for i in range(n_words):
        w = rng.choice(WORDS)
        if i == 0 or rng.random() < 0.1:
            w = w.capitalize()
        if rng.random() < 0.03:
            w = w.upper()
        words.append(w)
        if rng.random() < 0.12:
            words[-1] += rng.choice([",", ".", ";", ":", "!", "?", "...", " -", "'s", "'"])
    return " ".join(words)


CODE_SNIPPETS = [
    "def f(x):\n    return x * 2  # double\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\n",
    "const x = await fetch(`/api/${id}`).then(r => r.json());",
    '{"key": "value", "n": 3.14, "list": [1, 2, 3], "nested": {"a": null}}',
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "if x != None and y <= 10:\n        print(f\"{x!r:>10}\")\n",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }",
    "<div class=\"row\"><span id='a'>&nbsp;&amp;</span></div>",
    "    \n    \n\tindented\n        deeper\n",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b**=6;c//=7;d>>=8;e<<=9;f&=g|=h^=i",
    "path/to/file_name.cpp:123:45: error: expected ';' before '}' token",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.org, +1 (555) 123-4567",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "\"\"\"Docstring.\"\"\"\nclass A(B):\n    pass\n",
    "a = [i**2 for i in range(10) if i % 2 == 0]",
    "mov eax, [ebp+8]\n\tadd eax, 0x1F\n",
    "template <typename T> T max(T a, T b) { return a > b ? a : b; }",
    "// TODO(me): fix this\n/* multi\n   line */",
]


def numbers(rng):
    kind = rng.randrange(10)
    if kind == 0:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 60)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(0, 10**12):,}"
    if kind == 3:
        return f"{rng.randint(0, 10**9):_}"
    if kind == 4:
        return f"{rng.uniform(0, 1):.3e}"
    if kind == 5:
        return f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}"
    if kind == 6:
        return f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 7:
        return f"{rng.randint(0, 10**6)} {rng.randint(0, 10**6)}  {rng.randint(0, 99)}"
    if kind == 8:
        return f"${rng.randint(0, 10**6):,}.{rng.randint(0, 99):02d} ({rng.randint(0, 100)}%)"
    return f"0x{rng.randint(0, 2**32):08X} 0b{rng.randint(0, 255):b} 1e-{rng.randint(1, 30)}"


def whitespace(rng):
    parts = []
    for _ in range(rng.randint(1, 6)):
        parts.append(rng.choice(WHITESPACE) * rng.randint(1, 4))
        if rng.random() < 0.7:
            parts.append(rng.choice(WORDS + ["1", "23", "!", "x", "é", "日"]))
    return "".join(parts)


def unicode_mix(rng):
    script = rng.choice(sorted(SCRIPTS))
    text = SCRIPTS[script]
    start = rng.randrange(len(text))
    piece = text[start:start + rng.randint(1, 30)]
    form = rng.choice(["NFC", "NFD", "NFKC", "as is", "as is"])
    if form != "as is":
        piece = unicodedata.normalize(form, piece)
    if rng.random() < 0.5:
        piece = prose(rng, rng.randint(1, 5)) + rng.choice([" ", "", "\n"]) + piece
    return piece


def contraction(rng):
    w = rng.choice(WORDS)
    c = rng.choice(CONTRACTIONS)
    tail = rng.choice(["", " ", " " + rng.choice(WORDS), ".", "s", "ss", "1"])
    return rng.choice(["", "I", "You", "they", "  "]) + (" " if rng.random() < 0.3 else "") + w + c + tail


def special_text(rng):
    parts = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(SPECIALS))
        elif r < 0.7:
            parts.append(rng.choice(NEAR_SPECIALS))
        else:
            parts.append(rng.choice([prose(rng, rng.randint(1, 4)), "\n", " ", "user\n", "assistant\n", "123"]))
    return "".join(parts)


def odd(rng):
    parts = []
    for _ in range(rng.randint(1, 5)):
        parts.append(rng.choice(ODD) * rng.randint(1, 3))
        if rng.random() < 0.5:
            parts.append(rng.choice([" ", "a", "1", "!!", "日", " word", "\n"]))
    return "".join(parts)


def random_code_points(rng):
    """Code points from all planes, assigned or not (never surrogates)."""
    out = []
    for _ in range(rng.randint(1, 12)):
        block = rng.choice([(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x52F),
                            (0x590, 0x6FF), (0x900, 0xDFF), (0x1100, 0x11FF), (0x1E00, 0x1FFF),
                            (0x2000, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                            (0xE000, 0xF8FF), (0xF900, 0xFFFF), (0x10000, 0x1FFFF), (0x1F300, 0x1FAFF),
                            (0x20000, 0x3FFFF), (0xE0000, 0x10FFFF)])
        cp = rng.randint(*block)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out.append(chr(cp))
        if rng.random() < 0.3:
            out.append(rng.choice([" ", "  ", "a", "1", "\n", "'s"]))
    return "".join(out)


def long_words(rng):
    kind = rng.randrange(6)
    n = rng.choice([100, 500, 1000, 3000])
    if kind == 0:
        return "a" * n
    if kind == 1:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    if kind == 2:
        return "!" * (n // 10) + "?" * (n // 10)
    if kind == 3:
        return " " * (n // 5) + "x" + "\n" * (n // 10)
    if kind == 4:
        return "日本" * (n // 10)
    return "😀" * (n // 20) + "abc" + "1" * (n // 10)


def fixed_cases():
    """Hand-picked edge cases, each for a reason written next to it."""
    cases = [
        ("empty", ""),
        ("ws", " "), ("ws", "  "), ("ws", "\n"), ("ws", "\t"), ("ws", " \n"), ("ws", "\n "),
        ("ws", "a "), ("ws", "a  "), ("ws", "a  b"), ("ws", "a   b"), ("ws", " a"), ("ws", "  a"),
        ("ws", "a \n b"), ("ws", "a\t\tb"), ("ws", "x \u00a0y"), ("ws", "x\u00a0\u00a0y"), ("ws", "x \u3000 y"),
        ("ws", "x\u180ey"), ("ws", "x \u180e y"), ("ws", "x\u180e\u180e y"), ("ws", "x\u0085y"),
        ("ws", "x \u0085 y"), ("ws", "x\u200by"), ("ws", "x \u200b y"), ("ws", "x\u2028y\u2029z"),
        ("ws", "1 2  3   4"), ("ws", "1\n2\n\n3"), ("ws", "trailing  \n"), ("ws", "  leading"),
        ("digits", "0"), ("digits", "12345678901234567890"), ("digits", "3.14159"), ("digits", "1,000,000"),
        ("digits", " 42"), ("digits", "a1b2c3"), ("digits", "²³"), ("digits", "x²"), ("digits", "½"),
        ("digits", "Ⅻ"), ("digits", "٣٤٥"), ("digits", "１２３"), ("digits", "⑩"), ("digits", "𝟗𝟘"),
        ("contraction", "it's"), ("contraction", "IT'S"), ("contraction", "don't"), ("contraction", "DON'T"),
        ("contraction", "we're we've I'm you'll he'd"), ("contraction", "WE'RE WE'VE I'M YOU'LL HE'D"),
        ("contraction", "'s"), ("contraction", " 's"), ("contraction", "''"), ("contraction", "'ſ"),
        ("contraction", "'ſt"), ("contraction", "rock'n'roll"), ("contraction", "'twas"),
        ("special", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"),
        ("special", "<|im_start|><|im_start|>"), ("special", " <|im_end|> "), ("special", "x<|endoftext|>y"),
        ("special", "<|im_start|>system\nYou are helpful.<|im_end|>"),
        ("odd", "\x00"), ("odd", "a\x00b"), ("odd", "\ufeffBOM"), ("odd", "\ufffd\ufffd"), ("odd", "\ue000"),
        ("odd", "\U000f0000x"), ("odd", "\u0378"), ("odd", "!\u0378!"), ("odd", "a\u0378b"),
        ("odd", "\U0002fffe"), ("odd", "\U000e0001\U000e0041"), ("odd", "\u0301"), ("odd", " \u0301"),
        ("odd", "e\u0301\u0301\u0301"), ("odd", "\x1b[0m"), ("odd", "\x7f\x80\x9f"),
        ("odd", "\x04"), ("odd", "a\x04b"), ("odd", "!!\x06!!"), ("odd", "..\x13\x14.."), ("odd", "((\x04))"), ("odd", "\x13\x14 x"), ("odd", "\U00040000"), ("odd", "x \U0009abcd y"),
    ]
    for name, text in sorted(NEW_UNICODE.items()):
        # "X's" and "!X": a letter X ends before "'s"; an unknown X would join the punctuation.
        for context in ("{}", "a{} b", "!{}!", " {}1", "{}'s", "!{}", "{}'", "({})", "{}1'd", "x  {}", "x\n\n{}"):
            cases.append(("new_unicode:" + name, context.format(text)))
        for ch in text:
            cases.append(("new_unicode:" + name, ch + "'s"))
    for name, text in sorted(SCRIPTS.items()):
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            cases.append((f"script:{name}:{form}", unicodedata.normalize(form, text)))
    for snippet in CODE_SNIPPETS:
        cases.append(("code", snippet))
    return cases


GENERATORS = [("prose", lambda rng: prose(rng, rng.randint(1, 60)), 350),
              ("code", lambda rng: "".join(rng.sample(CODE_SNIPPETS, rng.randint(1, 3))), 120),
              ("numbers", lambda rng: " ".join(numbers(rng) for _ in range(rng.randint(1, 4))), 250),
              ("whitespace", whitespace, 250),
              ("unicode", unicode_mix, 350),
              ("contraction", contraction, 150),
              ("special", special_text, 150),
              ("odd", odd, 150),
              ("random_code_points", random_code_points, 250),
              ("long", long_words, 24)]


def all_cases():
    rng = random.Random(SEED)
    cases = fixed_cases()
    for name, generate, count in GENERATORS:
        for _ in range(count):
            cases.append((name, generate(rng)))
    seen, unique = set(), []
    for category, text in cases:
        if text not in seen:
            seen.add(text)
            unique.append((category, text))
    return unique


# ---- references ------------------------------------------------------------------------

def llama_cpp_tokenizer(model):
    from llama_cpp import Llama
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    return lambda text: list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def transformers_tokenizer(model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))
    return lambda text: list(tok.encode(text, add_special_tokens=False))


def arbiter_tokenizer(model, workdir):
    from tokenizers import Tokenizer
    subprocess.run([sys.executable, os.path.join(HERE, "gguf_to_tokenizer_json.py"), model, workdir], check=True)
    tok = Tokenizer.from_file(os.path.join(workdir, "tokenizer.json"))
    return lambda text: list(tok.encode(text, add_special_tokens=False).ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_model())
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--list", action="store_true", help="print the cases' count per category and exit")
    args = parser.parse_args()
    cases = all_cases()
    if args.list:
        counts = {}
        for category, _ in cases:
            counts[category.split(":")[0]] = counts.get(category.split(":")[0], 0) + 1
        print(len(cases), counts)
        return
    llama_cpp = llama_cpp_tokenizer(args.model)
    transformers = transformers_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as workdir:
        arbiter = arbiter_tokenizer(args.model, workdir)
        lines, unsettled = [], 0
        for category, text in cases:
            ids_l, ids_t, ids_a = llama_cpp(text), transformers(text), arbiter(text)
            if ids_l == ids_t:
                expect = "both"
            elif ids_a == ids_l:
                expect = "llama_cpp"
            elif ids_a == ids_t:
                expect = "transformers"
            else:
                expect = "neither"
                unsettled += 1
            lines.append(json.dumps({"category": category, "expect": expect, "llama_cpp": ids_l, "text": text,
                                     "transformers": ids_t},
                                    sort_keys=True, separators=(",", ":"), ensure_ascii=True))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    summary = {}
    for line in lines:
        expect = json.loads(line)["expect"]
        summary[expect] = summary.get(expect, 0) + 1
    print(f"{len(lines)} cases -> {args.out}: {summary}")
    if unsettled:
        print(f"warning: {unsettled} cases where the arbiter agrees with neither reference", file=sys.stderr)


if __name__ == "__main__":
    main()
