#!/usr/bin/env python3
"""Build English retrieval training pairs (synopsis -> long description) from Debian package descriptions.

    nice -n 19 python scripts/build_description_pairs.py [--output ~/.cache/bg2vec/debian-large/descriptions]

Stdlib only (plus bg2vec.evaluation.contamination, imported from src/ without torch). Reads the bookworm `main`
Packages and Translation-en lists with the helpers of scripts/build_eval_sets.py and writes `train.jsonl`,
`validation.jsonl` and `SOURCE.md` in the format of data/supervised: {"query": synopsis, "positive": long
description, "negative": [long description of another package of the same Section with the highest word overlap],
"instruction": INSTRUCTION}. Deterministic: sorted input, random.Random(0).

Kept apart from data/eval, checked here; the script refuses to write if any check fails:
- no package named in data/eval/SOURCE.md's machine-readable block, no package built from the same source as one
  of them, no reserved package (build_eval_sets.RESERVED) nor a package built from a reserved package's source;
- no written text equal (build_eval_sets.norm) to a text of data/eval/**/*.jsonl, and none sharing a 13-word
  sequence with one (contamination.words / NGRAM: the same check `bg2vec evaluate --contamination` makes);
- no description (long text or synopsis) shared by two packages; train and validation share no source package.
"""
import argparse, fnmatch, glob, json, os, random, re, sys
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
import build_eval_sets as ev  # noqa: E402  (read_apt_list, stanzas, long_text, norm, words, jaccard, RESERVED)
from bg2vec.evaluation import contamination  # noqa: E402  (normalize/words/NGRAM; imports no torch)

ROOT = ev.ROOT
EVAL = os.path.join(ROOT, "data", "eval")
DEFAULT_OUTPUT = os.path.join(os.path.expanduser("~"), ".cache", "bg2vec", "debian-large", "descriptions")
INSTRUCTION = "Given a short description of a software package, retrieve its full description; "
KEYS = ("query", "positive", "negative", "instruction")  # data/supervised/train.jsonl's keys, in order
MIN_WORDS, MAX_WORDS = 25, 120
SYN_MIN, SYN_MAX = 3, 15
N_VALIDATION, MAX_TRAIN = 300, 20000
VALIDATION_SHARE = 0.1      # share of source packages set aside for validation (rows and their negatives)
NEAR_DUP_JACCARD = 0.5      # a negative this close to the positive (word Jaccard) is a near-duplicate
RARE_DF = 300               # words in more descriptions of a section than this do not propose candidates
N_CANDIDATES = 40           # candidates (by rare-word overlap) rescored by full word overlap


# --- separation -----------------------------------------------------------------------------
def eval_packages(source_md=os.path.join(EVAL, "SOURCE.md")):
    """Packages of data/eval/SOURCE.md's machine-readable block (`task package version` lines)."""
    text = open(source_md, encoding="utf-8").read()
    block = re.search(r"## Packages \(machine-readable\).*?```text\n(.*?)```", text, re.S)
    if not block:
        raise SystemExit(f"{source_md}: no machine-readable package block")
    return {line.split()[1] for line in block.group(1).splitlines() if line.strip()}


def eval_texts(folder=EVAL):
    """Every string of every data/eval/**/*.jsonl row (labels included: they are short and harmless)."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.jsonl"), recursive=True)):
        for line in open(path, encoding="utf-8"):
            if line.strip():
                out += list(contamination._strings(json.loads(line)))
    return out


def grams(text, n=contamination.NGRAM):
    w = contamination.words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


class Separation:
    """The refusals: a package (by name and source) or a text that must not be trained on."""

    def __init__(self, source_of, eval_pkgs, texts, reserved=ev.RESERVED):
        # source_of: binary package -> source package, for every package of the archive list.
        self.eval_pkgs = set(eval_pkgs)
        self.reserved = tuple(reserved)
        self.eval_sources = {source_of.get(p, p) for p in self.eval_pkgs}
        self.reserved_sources = {s for p, s in source_of.items() if self.is_reserved(p)}
        self.keys = {ev.norm(t) for t in texts} - {""}
        self.grams = set().union(*(grams(t) for t in texts)) if texts else set()

    def is_reserved(self, pkg):
        return any(fnmatch.fnmatch(pkg, r) for r in self.reserved)

    def package_problem(self, pkg, src):
        if pkg in self.eval_pkgs:
            return "eval package"
        if src in self.eval_sources:
            return "same source as an eval package"
        if self.is_reserved(pkg):
            return "reserved package"
        if src in self.reserved_sources:
            return "same source as a reserved package"
        return None

    def text_problem(self, text):
        if ev.norm(text) in self.keys:
            return "equals an eval text"
        if grams(text) & self.grams:
            return f"shares a {contamination.NGRAM}-word sequence with an eval text"
        return None


# --- candidates -----------------------------------------------------------------------------
def archive():
    """(packages, descriptions by md5, list metadata) of the bookworm main lists."""
    ppath, psha, ptext = ev.read_apt_list(ev.PACKAGES_LIST)
    tpath, tsha, ttext = ev.read_apt_list(ev.TRANSLATION_LIST)
    by_md5 = {f["Description-md5"]: f["Description-en"] for f in ev.stanzas(ttext)
              if "Description-en" in f and "Description-md5" in f}
    pkgs = sorted((f for f in ev.stanzas(ptext) if "Package" in f), key=lambda f: f["Package"])
    return pkgs, by_md5, {"Packages": (ppath, psha), "Translation-en": (tpath, tsha)}


def source_map(pkgs):
    """binary package -> source package (the `Source` field without its version, else the package itself)."""
    return {f["Package"]: f.get("Source", f["Package"]).split()[0] for f in pkgs}


def candidates(pkgs, by_md5, sep, dropped):
    """One candidate per source package (first binary by name that passes), each a dict."""
    source_of = source_map(pkgs)
    texts = {}
    for f in pkgs:
        d = by_md5.get(f.get("Description-md5"))
        if d:
            texts[f["Package"]] = (" ".join(d.split("\n")[0].split()), ev.long_text(d))
    # a text used by several packages (same md5 or same normalised text) is dropped for all of them
    body_users, syn_users = Counter(), Counter()
    for syn, body in texts.values():
        body_users[ev.norm(body)] += 1
        syn_users[ev.norm(syn)] += 1
    by_src = {}
    for f in pkgs:
        name, src = f["Package"], source_of[f["Package"]]
        if src in by_src:
            continue
        why = sep.package_problem(name, src)
        if why:
            dropped[why] += 1
            continue
        if name not in texts:
            dropped["no English description"] += 1
            continue
        syn, body = texts[name]
        if body_users[ev.norm(body)] > 1 or syn_users[ev.norm(syn)] > 1:
            dropped["description shared by several packages"] += 1
            continue
        if not (SYN_MIN <= len(syn.split()) <= SYN_MAX and MIN_WORDS <= len(body.split()) <= MAX_WORDS):
            dropped["length"] += 1
            continue
        if not re.match(r"[A-Za-z0-9]", body) or "http" in body or "http" in syn:
            dropped["URL or no leading letter"] += 1
            continue
        why = sep.text_problem(syn) or sep.text_problem(body)
        if why:
            dropped[why] += 1
            continue
        by_src[src] = {"package": name, "source": src, "section": f.get("Section", "?").split("/")[-1],
                       "version": f.get("Version", "?"), "synopsis": syn, "text": body}
    out, seen_head = [], set()
    for src in sorted(by_src):
        c = by_src[src]
        head = " ".join(ev.words(c["text"])[:8])
        if head in seen_head:  # template descriptions ("This package contains the ... of ...")
            dropped["near-duplicate (same first 8 words)"] += 1
            continue
        seen_head.add(head)
        out.append(c)
    return out


# --- hard negatives -------------------------------------------------------------------------
def content(text):
    return {w for w in ev.words(text) if len(w) >= 3 and not w.isdigit()}


def near_duplicate(a, b):
    return (ev.norm(a["synopsis"]) == ev.norm(b["synopsis"]) or ev.jaccard(a["text"], b["text"]) > NEAR_DUP_JACCARD
            or ev.words(a["text"])[:8] == ev.words(b["text"])[:8])


def hard_negatives(pool):
    """{package: negative candidate}: same Section, another source, not a near-duplicate, most shared words
    (>= 3 letters) with the positive; ties: higher word Jaccard, then package name."""
    by_sec = defaultdict(list)
    for c in pool:
        by_sec[c["section"]].append(c)
    out = {}
    for items in by_sec.values():
        words_of = [content(c["text"]) for c in items]
        df = Counter(w for ws in words_of for w in ws)
        index = defaultdict(list)
        for i, ws in enumerate(words_of):
            for w in ws:
                if df[w] <= RARE_DF:
                    index[w].append(i)
        for i, c in enumerate(items):
            hits = Counter(j for w in words_of[i] if df[w] <= RARE_DF for j in index[w] if j != i)
            # ties broken by position, not by Counter order (which follows set order, i.e. the hash seed)
            top = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:N_CANDIDATES]
            scored = sorted(((len(words_of[i] & words_of[j]), ev.jaccard(c["text"], items[j]["text"]),
                              items[j]["package"], j) for j, _ in top),
                            key=lambda s: (-s[0], -s[1], s[2]))
            for *_, j in scored:
                n = items[j]
                if n["source"] != c["source"] and not near_duplicate(c, n):
                    out[c["package"]] = n
                    break
    return out


def make_row(c, negative):
    """One row in data/supervised's format."""
    return {"query": c["synopsis"], "positive": c["text"], "negative": [negative["text"]],
            "instruction": INSTRUCTION}


def build(pool, rng):
    """(train, validation) lists of (row, candidate, negative); validation sources are drawn first."""
    sources = sorted({c["source"] for c in pool})
    rng.shuffle(sources)
    val_src = set(sources[:int(len(sources) * VALIDATION_SHARE)])
    splits = {}
    for name, part in (("validation", [c for c in pool if c["source"] in val_src]),
                       ("train", [c for c in pool if c["source"] not in val_src])):
        neg = hard_negatives(part)
        rows = [(make_row(c, neg[c["package"]]), c, neg[c["package"]]) for c in part if c["package"] in neg]
        rng.shuffle(rows)
        splits[name] = rows[:N_VALIDATION if name == "validation" else MAX_TRAIN]
    return splits["train"], splits["validation"]


# --- final checks ---------------------------------------------------------------------------
def check(train, validation, sep, source_of):
    """Problems (strings) found in the rows about to be written; empty if all checks pass."""
    problems = []
    for name, rows in (("train", train), ("validation", validation)):
        for row, c, n in rows:
            if set(row) != set(KEYS) or not isinstance(row["negative"], list):
                problems.append(f"{name}: row keys {sorted(row)}")
            for pkg in (c["package"], n["package"]):
                why = sep.package_problem(pkg, source_of[pkg])
                if why:
                    problems.append(f"{name}: {pkg}: {why}")
            for text in (row["query"], row["positive"], *row["negative"]):
                why = sep.text_problem(text)
                if why:
                    problems.append(f"{name}: {text[:60]!r}: {why}")
    train_src = {s for _, c, n in train for s in (c["source"], n["source"])}
    val_src = {s for _, c, n in validation for s in (c["source"], n["source"])}
    if train_src & val_src:
        problems.append(f"train and validation share source packages: {sorted(train_src & val_src)[:5]}")
    keys = Counter(ev.norm(t) for rows in (train, validation) for r, _, _ in rows for t in (r["query"], r["positive"]))
    shared = [k for k, v in keys.items() if v > 1]
    if shared:
        problems.append(f"{len(shared)} queries/positives occur twice")
    return problems


def write_source_md(path, train, validation, dropped, meta, n_eval_pkgs, n_eval_texts):
    sections = Counter(c["section"] for _, c, _ in train)
    lines = [
        "# English description pairs: where they come from", "",
        "Built by `scripts/build_description_pairs.py` (bg2vec repository) from the Debian 12 (bookworm) `main` "
        "archive lists; every text was written by Debian maintainers or upstream authors. Deterministic "
        "(sorted input, `random.Random(0)`).", "",
        "| file | rows | source packages |", "| --- | --- | --- |",
        *(f"| `{n}.jsonl` | {len(r)} | {len({c['source'] for _, c, _ in r})} |"
          for n, r in (("train", train), ("validation", validation))), "",
        "One JSON object per line: `{\"query\": synopsis, \"positive\": long description, \"negative\": [long "
        "description of another package], \"instruction\": " + json.dumps(INSTRUCTION) + "}`.", "",
        "## How it is built", "",
        f"- One binary package per source package (first by name that passes); synopsis {SYN_MIN}-{SYN_MAX} words, "
        f"long description {MIN_WORDS}-{MAX_WORDS} words (paragraphs joined to one line), no URL; a synopsis or long "
        "description used by several packages is dropped for all of them; a description whose first 8 words "
        "repeat another's (templates) is dropped.",
        f"- {int(VALIDATION_SHARE * 100)}% of the source packages are drawn for validation; its rows and their "
        "negatives come only from those, train's only from the others.",
        "- Hard negative: the long description of another package of the same Section with the most shared words "
        f"(>= 3 letters), ties by word Jaccard then name; not the same source, not a near-duplicate (same synopsis, "
        f"same first 8 words, or word Jaccard > {NEAR_DUP_JACCARD}).", "",
        "## Separation from data/eval (checked; the script refuses to write otherwise)", "",
        f"- No package among the {n_eval_pkgs} of data/eval/SOURCE.md's machine-readable block, none built from the "
        "same source as one, none reserved (" + ", ".join(f"`{r}`" for r in ev.RESERVED) + ") nor built from a "
        "reserved package's source.",
        f"- No written text equal (NFC, lower-case, letters and digits only) to any of the {n_eval_texts} texts of "
        f"data/eval/**/*.jsonl, and none sharing a {contamination.NGRAM}-word sequence with one.",
        "- Dropped (one count per binary package tried, first reason; a source stops at its first kept package): "
        + "; ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) + ".", "",
        "## Lists", "",
        *(f"- {k}: `{os.path.basename(p)}` sha256 `{s}`" for k, (p, s) in meta.items()), "",
        "Train rows per Section: " + ", ".join(f"{k} {v}" for k, v in sorted(sections.items())) + ".", "",
        "Licence: each description is part of its package and under that package's licence (DFSG-free `main`).", "",
    ]
    open(path, "w", encoding="utf-8").write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for train.jsonl, validation.jsonl, SOURCE.md")
    args = ap.parse_args()

    pkgs, by_md5, meta = archive()
    source_of = source_map(pkgs)
    eval_pkgs, texts = eval_packages(), eval_texts()
    sep = Separation(source_of, eval_pkgs, texts)
    dropped = Counter()
    pool = candidates(pkgs, by_md5, sep, dropped)
    print(f"candidates: {len(pool)}; dropped: {dict(sorted(dropped.items()))}", file=sys.stderr)
    train, validation = build(pool, random.Random(0))
    problems = check(train, validation, sep, source_of)
    if problems:
        raise SystemExit("refusing to write:\n" + "\n".join(problems[:20]))
    if len(train) < 5000 or len(validation) < N_VALIDATION:
        raise SystemExit(f"too few rows: train {len(train)}, validation {len(validation)}")
    os.makedirs(args.output, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation)):
        ev.write_jsonl(os.path.join(args.output, f"{name}.jsonl"), [r for r, _, _ in rows])
    write_source_md(os.path.join(args.output, "SOURCE.md"), train, validation, dropped, meta,
                    len(eval_pkgs), len(set(texts)))
    print(f"wrote {args.output}: train {len(train)}, validation {len(validation)}; checks passed")


if __name__ == "__main__":
    main()
