#!/usr/bin/env python3
"""Build the large Bulgarian training corpus and supervised sets from Debian 12 into a cache (stdlib only).

The small sets that ship in the repo (data/bg, data/supervised) come from a few dozen packages.  This script
reads every bookworm package that ships a Bulgarian gettext catalog (found in the archive's Contents index, so
the list is found, not written by hand), except the packages of the evaluation sets (data/eval) and those
reserved for outside evaluation, and writes into a cache folder, never into the repo:

    OUTPUT/bg/train.txt, bg/validation.txt           Bulgarian lines for MNTP/SimCSE (build_bg_corpus.py rules)
    OUTPUT/supervised/en-bg.jsonl                    English msgid -> Bulgarian msgstr, one hard negative
    OUTPUT/supervised/bg-bg.jsonl                    Bulgarian -> Bulgarian: two packages' translations of a msgid
    OUTPUT/supervised/train.jsonl                    both kinds, shuffled
    OUTPUT/supervised/validation.jsonl               both kinds, from other packages than train
    OUTPUT/SOURCE.md                                 packages, versions, licences, counts, checks, sha256

Run (as root or with apt-get allowed to write WORK; downloads go through apt-get only, debs are cached in WORK
so a re-run downloads nothing):

    nice -n 19 python3 scripts/build_large_corpus.py [--output ~/.cache/bg2vec/debian-large] \
        [--work ~/.cache/bg2vec/debian-large-work] [--max-deb-mb 30] [--max-total-mb 3000]

Separation (the script refuses to write if a check fails): no package of data/eval (its SOURCE.md and
build_eval_sets.PACKAGES), no reserved package (libreoffice-l10n-*, fortunes-*, ... never downloaded), no text
equal after normalisation to a data/eval text (or a data/bg/eval_pairs.tsv sentence), no 13-word sequence shared
with one (bg2vec.evaluation.contamination's normalisation), validation packages disjoint from train packages.
Output is deterministic for a given set of .debs and Contents/Packages lists.
"""
import argparse, gettext, glob, hashlib, io, json, os, random, re, subprocess, sys, fnmatch
import xml.etree.ElementTree as ET
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_bg_corpus as bgc  # noqa: E402  (clean, key, mo_items, page_items, SENTENCE_END, MAX_PKG_BYTES)
import build_eval_sets as ev  # noqa: E402  (norm, words, jaccard, read_deb, licence_of, write_jsonl, ...)
import build_supervised_set as sup  # noqa: E402  (forbidden_lists, catalog_rows, neg_pool, INSTRUCTION)

ROOT = ev.ROOT
sys.path.insert(0, os.path.join(ROOT, "src"))
from bg2vec.evaluation.contamination import NGRAM, normalize, words as ngram_words  # noqa: E402

DEFAULT_OUTPUT = os.path.expanduser("~/.cache/bg2vec/debian-large")
DEFAULT_WORK = os.path.expanduser("~/.cache/bg2vec/debian-large-work")
PARAPHRASE_INSTRUCTION = "Retrieve a Bulgarian text with the same meaning; "
WANTED = re.compile(r"/locale/bg/LC_MESSAGES/[^/]+\.mo$|^usr/share/help/bg/.+\.page$")
CAP_PAIRS = 200                  # en-bg rows per package at most (diversity); bg-bg rows are not capped
VALIDATION_EVERY = 20            # ~5% of the other packages go to validation (by a hash of the name)
CONTENTS_CONF = """Acquire::IndexTargets::deb::Contents-deb {
  MetaKey "$(COMPONENT)/Contents-$(ARCHITECTURE)";
  ShortDescription "Contents-$(ARCHITECTURE)";
  Description "$(RELEASE)/$(COMPONENT) $(ARCHITECTURE) Contents (deb)";
  flatMetaKeyFallback "true";
  PDiffs "false";
  KeepCompressed "true";
};
"""


# --- separation checks (pure functions, tested in tests/data/test_large_corpus.py) ---------------------------
def package_problems(train, validation, reserved, eval_pkgs):
    """Reasons the package lists are not allowed (empty list: fine)."""
    out = [f"{p}: package of the evaluation sets" for p in sorted(set(train) | set(validation)) if p in eval_pkgs]
    out += [f"{p}: reserved for outside evaluation" for p in sorted(set(train) | set(validation))
            if any(fnmatch.fnmatch(p, r) for r in reserved)]
    out += [f"{p}: in both train and validation" for p in sorted(set(train) & set(validation))]
    return out


class EvalIndex:
    """Evaluation texts as comparison keys: build_eval_sets.norm, contamination.normalize and the 13-word
    sequences of contamination.words."""

    def __init__(self, texts):
        texts = [t for t in texts if t.strip()]
        self.norm = {ev.norm(t) for t in texts} - {""}
        self.normalized = {normalize(t) for t in texts}
        self.grams = {tuple(w[i:i + NGRAM]) for t in texts for w in [ngram_words(t)]
                      for i in range(len(w) - NGRAM + 1)}

    def reason(self, text):
        """Why `text` may not be used ('equal' or 'ngram'), or None."""
        if ev.norm(text) in self.norm or normalize(text) in self.normalized:
            return "equal"
        w = ngram_words(text)
        if any(tuple(w[i:i + NGRAM]) in self.grams for i in range(len(w) - NGRAM + 1)):
            return "ngram"
        return None


def eval_texts(eval_dir=sup.EVAL_DIR, pairs_tsv=os.path.join(ROOT, "data", "bg", "eval_pairs.tsv")):
    """Every string of data/eval/**/*.jsonl and the sentences of data/bg/eval_pairs.tsv."""
    out = []
    for path in sorted(glob.glob(os.path.join(eval_dir, "**", "*.jsonl"), recursive=True)):
        for line in open(path, encoding="utf-8"):
            if line.strip():
                out += [t for t in ev.all_texts(json.loads(line)) if isinstance(t, str)]
    if os.path.exists(pairs_tsv):
        for line in open(pairs_tsv, encoding="utf-8").read().splitlines()[1:]:
            out += line.split("\t")[:2]
    return out


def text_problems(named_texts, index):
    """[(where, reason, text)] for every text that equals or shares a 13-word sequence with an eval text."""
    return [(where, r, t) for where, t in named_texts for r in [index.reason(t)] if r]


def row_problems(rows, reference_keys):
    """Rows whose keys differ from data/supervised's."""
    return [r for r in rows if list(r) != list(reference_keys)]


def reference_keys(path=os.path.join(ROOT, "data", "supervised", "train.jsonl")):
    with open(path, encoding="utf-8") as f:
        return list(json.loads(f.readline()))


# --- finding and fetching packages ---------------------------------------------------------------------------
def update_lists(work):
    """Contents and Packages lists of the configured sources (bookworm) in WORK/lists, fetched once."""
    lists = os.path.join(work, "lists")
    if not glob.glob(os.path.join(lists, "*_main_Contents-all.lz4")):
        os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
        conf = os.path.join(work, "contents.conf")
        open(conf, "w").write(CONTENTS_CONF)
        subprocess.run(["apt-get", "-c", conf, "-o", f"Dir::State::Lists={lists}", "-o",
                        "Acquire::Languages=none", "update"], check=True)
    return lists


def lz4_lines(path):
    return subprocess.run(["lz4", "-dc", path], check=True, capture_output=True).stdout.decode(
        "utf-8", "replace").splitlines()


def bg_packages(lists):
    """Packages with a Bulgarian .mo catalog or help page in the Contents lists (sorted)."""
    pkgs = set()
    for path in sorted(glob.glob(os.path.join(lists, "*_Contents-*.lz4"))):
        for line in lz4_lines(path):
            name, _, where = line.rpartition(" ")
            if WANTED.search(name.strip()):
                pkgs.update(p.rsplit("/", 1)[-1] for p in where.split(","))
    return sorted(pkgs)


def archive_sizes(lists):
    """{package: .deb size in bytes} from the Packages lists (the last list naming a package wins)."""
    sizes = {}
    for path in sorted(glob.glob(os.path.join(lists, "*_binary-amd64_Packages.lz4"))):
        pkg = None
        for line in lz4_lines(path):
            if line.startswith("Package: "):
                pkg = line[9:].strip()
            elif line.startswith("Size: ") and pkg:
                sizes[pkg] = int(line[6:])
    return sizes


def choose(candidates, sizes, reserved, eval_pkgs, max_deb, max_total):
    """(chosen packages, {skipped package: reason}); forbidden ones are never downloaded."""
    chosen, skipped, total = [], {}, 0
    for p in candidates:
        if package_problems([p], [], reserved, eval_pkgs):
            skipped[p] = "evaluation or reserved package"
        elif p in BG_PAIRS_PACKAGES:
            skipped[p] = "data/bg eval_pairs catalog"
        elif p not in sizes:
            skipped[p] = "not in the amd64 Packages list"
        elif sizes[p] > max_deb:
            skipped[p] = f".deb {sizes[p] / 1e6:.0f} MB > {max_deb / 1e6:.0f} MB"
        elif total + sizes[p] > max_total:
            skipped[p] = "total download budget reached"
        else:
            chosen.append(p)
            total += sizes[p]
    return chosen, skipped


def download(work, pkgs):
    """{package: cached .deb}; missing ones are fetched with apt-get download in batches."""
    debdir = os.path.join(work, "debs")
    os.makedirs(debdir, exist_ok=True)
    have = lambda p: sorted(glob.glob(os.path.join(debdir, glob.escape(p) + "_*.deb")))
    missing = [p for p in pkgs if not have(p)]
    for i in range(0, len(missing), 40):
        batch = missing[i:i + 40]
        if subprocess.run(["apt-get", "download", *batch], cwd=debdir).returncode:
            for p in batch:                     # one bad name fails the batch: retry one by one
                if not have(p):
                    subprocess.run(["apt-get", "download", p], cwd=debdir)
    return {p: have(p)[-1] for p in pkgs if have(p)}


def debconf_bg(deb):
    """Bulgarian debconf template descriptions of a .deb (control archive only: cheap)."""
    proc = subprocess.run(["dpkg-deb", "-I", deb, "templates"], capture_output=True)
    out, cur = [], None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if re.match(r"Description-bg(\.UTF-8)?:", line):
            cur = [line.split(":", 1)[1].strip()]
            out.append(cur)
        elif cur is not None and line.startswith(" "):
            cur.append("" if line.strip() == "." else line.strip())
        else:
            cur = None
    return ["\n".join(x) for x in out]


def parses(mo):
    """Whether gettext can read a .mo (a few ship a broken Plural-Forms header)."""
    try:
        gettext.GNUTranslations(io.BytesIO(mo))
        return True
    except (OSError, ValueError, IndexError, KeyError, SyntaxError, UnicodeDecodeError):
        return False


# --- building ------------------------------------------------------------------------------------------------
def split_of(pkg):
    """train/validation by package: the small sets' validation packages stay validation, their training ones
    stay train, the rest by a hash of the name (stable across runs and package lists)."""
    if pkg in SMALL_VALIDATION:
        return "validation"
    if pkg in SMALL_TRAIN:
        return "train"
    return "validation" if int(hashlib.sha256(pkg.encode()).hexdigest(), 16) % VALIDATION_EVERY == 0 else "train"


SMALL_VALIDATION = {p for p, r in bgc.PACKAGES.items() if r == "validation"} | set(sup.VALIDATION_PACKAGES)
SMALL_TRAIN = {p for p, r in bgc.PACKAGES.items() if r == "train"} | set(sup.TRAIN_PACKAGES)
BG_PAIRS_PACKAGES = {p for p, r in bgc.PACKAGES.items() if r == "pairs"}


def documents(files, templates):
    """(msgid or None, raw text) of one package: .mo paragraphs, help page elements, debconf descriptions."""
    for path in sorted(files):
        if path.endswith(".mo"):
            yield from bgc.mo_items(files[path])
        else:
            try:
                yield from ((None, t) for t in bgc.page_items(io.BytesIO(files[path])))
            except ET.ParseError:
                continue
    for t in templates:
        yield from ((None, para) for para in re.split(r"\n\s*\n|\n\n", t))


def build_corpus(packages, docs, index, drops):
    """{split: lines}: build_bg_corpus.py's rules (>= 5 words, sentence end, dedup, per-package cap)."""
    texts = {"train": [], "validation": []}
    for pkg in packages:
        for msgid, raw in docs[pkg]:
            t = bgc.clean(raw, min_words=3)
            if t and len(t.split()) >= bgc.MIN_WORDS and bgc.SENTENCE_END.search(t):
                texts[split_of(pkg)].append((pkg, t))
    out, seen, per_pkg = {}, set(), defaultdict(int)
    for split in ("validation", "train"):      # validation first: train drops its texts
        items = sorted(set(texts[split]))
        random.Random(0).shuffle(items)
        lines = []
        for pkg, t in items:
            size = len(t.encode()) + 1
            if bgc.key(t) in seen or per_pkg[pkg] + size > bgc.MAX_PKG_BYTES:
                continue
            reason = index.reason(t)
            if reason:
                drops[f"corpus {split}: {reason}"] += 1
                continue
            seen.add(bgc.key(t))
            per_pkg[pkg] += size
            lines.append((pkg, t))
        out[split] = lines
    return out


class NegativeFinder:
    """build_supervised_set.hard_negative over one package's pool, with the word sets precomputed and an inverted
    index (same rule and ties: most shared words of >= 3 letters, then higher Jaccard, then the text)."""

    def __init__(self, pool):
        self.pool = [(pen, pbg, ev.norm(pen), ev.norm(pbg), sup.content_words(pbg), set(ev.words(pbg)))
                     for pen, pbg in pool]
        self.by_word = defaultdict(list)
        for i, item in enumerate(self.pool):
            for w in item[4]:
                self.by_word[w].append(i)

    def __call__(self, en, bg, banned):
        wb, ken, kbg, ab = sup.content_words(bg), ev.norm(en), ev.norm(bg), set(ev.words(bg))
        hits = sorted({i for w in wb for i in self.by_word.get(w, ())})
        for candidates in (hits, range(len(self.pool))):  # no sharing candidate left: every shared count is 0
            best = None
            for i in candidates:
                _, pbg, kpen, kp, cw, aw = self.pool[i]
                if kpen == ken or kp == kbg or kp in banned:
                    continue
                k = (-len(wb & cw), -len(ab & aw) / max(1, len(ab | aw)), pbg)
                if best is None or k < best[0]:
                    best = (k, pbg)
            if best:
                return best[1]
        return None


def build_pairs(packages, catalogs, finders, index, drops):
    """{split: [(row, package, kind)]} of en-bg and bg-bg rows."""
    out = {"train": [], "validation": []}
    seen, para_seen = set(), set()             # each text once per kind, across both splits
    for split in ("validation", "train"):
        pkgs = [p for p in packages if split_of(p) == split]
        # en-bg: each English text and Bulgarian positive once (across both splits)
        rng, chosen = random.Random(0), []
        for pkg in pkgs:
            rows = []
            for en, bg in catalogs[pkg]:
                ke, kb = ev.norm(en), ev.norm(bg)
                if index.reason(en) or index.reason(bg):
                    drops[f"en-bg {split}: eval text"] += 1
                elif ke in seen or kb in seen:
                    drops[f"en-bg {split}: duplicate"] += 1
                else:
                    seen.update((ke, kb))
                    rows.append((en, bg))
            rng.shuffle(rows)
            chosen += [(pkg, en, bg) for en, bg in rows[:CAP_PAIRS]]
        # bg-bg: one English msgid, two packages' different Bulgarian translations (the least similar pair)
        by_msgid = defaultdict(dict)
        for pkg in pkgs:
            for en, bg in catalogs[pkg]:
                if not index.reason(bg):
                    by_msgid[en].setdefault(ev.norm(bg), (bg, pkg))
        para = []
        for en in sorted(by_msgid):
            v = sorted(by_msgid[en].values())
            best = min(((ev.jaccard(a, b), a, b, pb) for i, (a, pa) in enumerate(v) for b, pb in v[i + 1:]
                        if pa != pb), default=None)
            if best and ev.norm(best[1]) not in para_seen and ev.norm(best[2]) not in para_seen:
                para_seen.update((ev.norm(best[1]), ev.norm(best[2])))
                para.append((best[3], en, best[1], best[2]))
        out[split] = [(pkg, "en-bg", en, en, bg) for pkg, en, bg in chosen] + \
                     [(pkg, "bg-bg", en, a, b) for pkg, en, a, b in para]
    keys = {s: {ev.norm(t) for _, _, _, q, p in rows for t in (q, p)} for s, rows in out.items()}
    result = {}
    for split, other in (("train", "validation"), ("validation", "train")):
        rows = []
        for pkg, kind, en, q, p in out[split]:
            neg = finders[pkg](en, p, keys[other] | {ev.norm(q)})
            if neg is None or index.reason(neg):
                drops[f"{kind} {split}: no hard negative"] += 1
                continue
            inst = sup.INSTRUCTION if kind == "en-bg" else PARAPHRASE_INSTRUCTION
            rows.append(({"query": q, "positive": p, "negative": [neg], "instruction": inst}, pkg, kind))
        result[split] = rows
    return result


def write_source_md(out, packages, versions, licences, corpus, pairs, skipped, drops, reserved, eval_pkgs,
                    index, candidates, skipped_catalogs):
    per = defaultdict(lambda: defaultdict(int))
    for s, lines in corpus.items():
        for pkg, _ in lines:
            per[pkg]["lines"] += 1
    for s, rows in pairs.items():
        for _, pkg, kind in rows:
            per[pkg][kind] += 1
    files = ["bg/train.txt", "bg/validation.txt", "supervised/train.jsonl", "supervised/validation.jsonl",
             "supervised/en-bg.jsonl", "supervised/bg-bg.jsonl"]
    count = {f: sum(1 for _ in open(os.path.join(out, f), encoding="utf-8")) for f in files}
    kinds = {s: defaultdict(int) for s in pairs}
    for s, rows in pairs.items():
        for _, _, k in rows:
            kinds[s][k] += 1
    L = []
    add = L.append
    add("# Large Debian corpus: where it comes from\n")
    add("Built by `scripts/build_large_corpus.py` (stdlib only; it reuses the helpers of `build_bg_corpus.py`, "
        "`build_supervised_set.py` and `build_eval_sets.py`) from Debian 12 (bookworm). Every text was written "
        "by people (upstream developers, volunteer translators); nothing was generated or translated by us. "
        "Not shipped in the repo: rebuild it with the command at the end.\n")
    add("## Files\n")
    add("| file | rows | notes |")
    add("| --- | --- | --- |")
    notes = {"bg/train.txt": "Bulgarian lines (MNTP/SimCSE)", "bg/validation.txt": "other packages",
             "supervised/train.jsonl": f"en-bg {kinds['train']['en-bg']} + bg-bg {kinds['train']['bg-bg']}, "
             "shuffled", "supervised/validation.jsonl": f"en-bg {kinds['validation']['en-bg']} + bg-bg "
             f"{kinds['validation']['bg-bg']}, other packages", "supervised/en-bg.jsonl": "train, English -> "
             "Bulgarian", "supervised/bg-bg.jsonl": "train, Bulgarian -> Bulgarian paraphrase"}
    for f in files:
        add(f"| `{f}` | {count[f]} | {notes[f]} |")
    add("")
    add("Rows have the keys and format of `data/supervised/train.jsonl`: `{\"query\", \"positive\", "
        "\"negative\": [one], \"instruction\"}`. en-bg instruction: `" + sup.INSTRUCTION + "`; bg-bg "
        "instruction: `" + PARAPHRASE_INSTRUCTION + "`.\n")
    add("## How it is built\n")
    add(f"- **Packages.** Every package of the bookworm Contents index (main, updates) with a file matching "
        f"`{WANTED.pattern}`: {len(candidates)} packages; {len(packages)} read, {len(skipped)} skipped (list "
        "below). Forbidden packages are never downloaded. Split by package: the validation packages of "
        "`data/bg` and `data/supervised` and every package whose sha256(name) is 0 modulo "
        f"{VALIDATION_EVERY} go to validation, the rest to train.")
    add("- **bg/*.txt.** The rules of `build_bg_corpus.py`: `.mo` paragraphs (option tables dropped), Mallard "
        "help pages (`usr/share/help/bg`) and Bulgarian debconf template descriptions, cleaned by its `clean` "
        f"(markup, placeholders, URLs dropped, >= {int(bgc.MIN_CYR * 100)}% Cyrillic), >= {bgc.MIN_WORDS} words, "
        "ending like a sentence, de-duplicated case- and punctuation-insensitively (validation first; train "
        f"drops what validation has), at most {bgc.MAX_PKG_BYTES:,} bytes per package, shuffled with "
        "`random.Random(0)`.")
    add("- **supervised/en-bg.** The pairs of `build_supervised_set.py` (`catalog_rows`: 3-30 English words, "
        f"3-40 Bulgarian), each English text and Bulgarian positive once; at most {CAP_PAIRS} per package "
        "(`random.Random(0)`). Hard negative: `build_supervised_set.hard_negative`'s rule (the Bulgarian text "
        "of another msgid of the same package sharing the most words of >= 3 letters; ties: Jaccard, then "
        "text), computed with an inverted index; never a text of the other split.")
    add("- **supervised/bg-bg.** An English msgid translated differently (different normalised text) by two "
        "packages of the same split: the least similar pair (word Jaccard) is query and positive; the hard "
        "negative by the same rule from the positive's package. Each Bulgarian text once.")
    add("")
    add("## Separation checks (the script refuses to write if one fails)\n")
    add("- Packages of the evaluation sets (`build_eval_sets.PACKAGES` and every package named in "
        f"`data/eval/SOURCE.md`, {len(eval_pkgs)} packages) and reserved ones ("
        + ", ".join(f"`{r}`" for r in sorted(reserved)) + "): none used, none downloaded. The catalogs of "
        "`data/bg/eval_pairs.tsv` (" + ", ".join(sorted(BG_PAIRS_PACKAGES)) + ") are left out too. **passed**")
    add("- Train and validation packages are disjoint. **passed**")
    add(f"- No text equals a `data/eval/**/*.jsonl` text or a `data/bg/eval_pairs.tsv` sentence "
        f"({len(index.norm)} keys; `build_eval_sets.norm` and `bg2vec.evaluation.contamination.normalize`), and "
        f"none shares a {NGRAM}-word sequence with one ({len(index.grams)} sequences; "
        "`contamination.words`). **passed** (verified on every written text)")
    add("- Every row has the keys of `data/supervised/train.jsonl`; no negative equals its positive. **passed**")
    add("")
    add("Candidates dropped on the way:\n")
    for k in sorted(drops):
        add(f"- {k}: {drops[k]}")
    add("")
    add("## Files and sha256\n")
    add("```")
    for f in files:
        add(f"{ev.sha256(os.path.join(out, f))}  {f}")
    add("```\n")
    add("## Packages\n")
    add("Licence as in `build_eval_sets.licence_of`.\n")
    add("| package | version | licence | split | lines | en-bg | bg-bg |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for p in packages:
        add(f"| {p} | {versions[p]} | {licences[p].replace('|', '/')} | {split_of(p)} | {per[p]['lines']} | "
            f"{per[p]['en-bg']} | {per[p]['bg-bg']} |")
    add("")
    add("## Skipped packages\n")
    add("| package | why |")
    add("| --- | --- |")
    for p in sorted(skipped):
        add(f"| {p} | {skipped[p]} |")
    add("")
    add("Unreadable catalogs left out (gettext cannot parse them):\n")
    for p in sorted(skipped_catalogs):
        add(f"- {p}: " + ", ".join(f"`{c}`" for c in skipped_catalogs[p]))
    add("")
    add("## Rebuild\n")
    add("```bash\nnice -n 19 python3 scripts/build_large_corpus.py --output ~/.cache/bg2vec/debian-large "
        "--work ~/.cache/bg2vec/debian-large-work\n```\n")
    add("Contents and Packages lists are fetched once into `WORK/lists` (`apt-get update` with a Contents "
        "target), .debs with `apt-get download` into `WORK/debs`; a re-run downloads nothing and writes the "
        "same files.")
    with open(os.path.join(out, "SOURCE.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


# --- main ----------------------------------------------------------------------------------------------------
def inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="cache folder to write (never inside the repo)")
    ap.add_argument("--work", default=DEFAULT_WORK, help="apt lists and downloaded .debs (kept for re-runs)")
    ap.add_argument("--max-deb-mb", type=float, default=30.0, help="skip packages whose .deb is larger")
    ap.add_argument("--max-total-mb", type=float, default=3000.0, help="stop adding packages past this total")
    args = ap.parse_args()
    if inside(args.output, ROOT) or inside(args.work, ROOT):
        raise SystemExit(f"--output/--work must be outside the repo {ROOT}: it is a cache")

    reserved, _used, eval_pkgs = sup.forbidden_lists()
    reserved = set(reserved) | set(ev.RESERVED)
    index = EvalIndex(eval_texts())
    lists = update_lists(args.work)
    candidates = bg_packages(lists)
    chosen, skipped = choose(candidates, archive_sizes(lists), reserved, eval_pkgs,
                             args.max_deb_mb * 1e6, args.max_total_mb * 1e6)
    if package_problems(chosen, [], reserved, eval_pkgs):
        raise SystemExit("refusing: " + "; ".join(package_problems(chosen, [], reserved, eval_pkgs)))
    debs = download(args.work, chosen)
    versions, licences, docs, catalogs, finders, skipped_catalogs = {}, {}, {}, {}, {}, {}
    for n, pkg in enumerate(chosen):
        if pkg not in debs:
            skipped[pkg] = "apt-get download failed"
            continue
        versions[pkg], files, cr = ev.read_deb(debs[pkg], pkg, WANTED)
        licences[pkg] = ev.licence_of(cr)
        bad = [p for p in files if p.endswith(".mo") and not parses(files[p])]
        if bad:
            skipped_catalogs[pkg] = bad
        files = {p: d for p, d in files.items() if p not in bad}
        mos = {p: d for p, d in files.items() if p.endswith(".mo")}
        try:
            docs[pkg] = list(documents(files, debconf_bg(debs[pkg])))
            catalogs[pkg] = sup.catalog_rows(mos)
            finders[pkg] = NegativeFinder([x for x in sup.neg_pool(mos) if not index.reason(x[1])])
        except (OSError, ValueError, IndexError, KeyError, UnicodeDecodeError) as e:   # a broken catalog: skip the package
            skipped[pkg] = f"unreadable catalog ({type(e).__name__})"
            for d in (versions, licences, docs, catalogs, finders):
                d.pop(pkg, None)
        if n % 50 == 0:
            print(f"read {n}/{len(chosen)} packages", file=sys.stderr)
    packages = sorted(docs)

    drops = defaultdict(int)
    corpus = build_corpus(packages, docs, index, drops)
    pairs = build_pairs(packages, catalogs, finders, index, drops)

    # --- checks: refuse to write if any fails ---
    split_pkgs = {s: {p for p in packages if split_of(p) == s} for s in ("train", "validation")}
    problems = package_problems(split_pkgs["train"], split_pkgs["validation"], reserved, eval_pkgs)
    named = [(f"bg/{s}.txt", t) for s, lines in corpus.items() for _, t in lines]
    named += [(f"supervised/{s}", t) for s, rows in pairs.items() for r, _, _ in rows
              for t in [r["query"], r["positive"], *r["negative"]]]
    problems += [f"{w}: {r} {t!r}" for w, r, t in text_problems(named, index)]
    keys = reference_keys()
    problems += [f"row keys {list(r)} != {keys}" for s in pairs.values() for r, _, _ in s
                 if row_problems([r], keys)]
    for s, rows in pairs.items():
        if any(ev.norm(r["negative"][0]) == ev.norm(r["positive"]) for r, _, _ in rows):
            problems.append(f"supervised/{s}: a negative equals its positive")
    if problems:
        raise SystemExit("refusing to write:\n" + "\n".join(problems[:50]))

    out = args.output
    for sub in ("bg", "supervised"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for split, lines in corpus.items():
        with open(os.path.join(out, "bg", split + ".txt"), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(t + "\n" for _, t in lines)
    train = list(pairs["train"])
    ev.write_jsonl(os.path.join(out, "supervised", "en-bg.jsonl"), [r for r, _, k in train if k == "en-bg"])
    ev.write_jsonl(os.path.join(out, "supervised", "bg-bg.jsonl"), [r for r, _, k in train if k == "bg-bg"])
    random.Random(0).shuffle(train)
    ev.write_jsonl(os.path.join(out, "supervised", "train.jsonl"), [r for r, _, _ in train])
    val = list(pairs["validation"])
    random.Random(0).shuffle(val)
    ev.write_jsonl(os.path.join(out, "supervised", "validation.jsonl"), [r for r, _, _ in val])
    write_source_md(out, packages, versions, licences, corpus, pairs, skipped, drops, reserved, eval_pkgs,
                    index, candidates, skipped_catalogs)
    print(open(os.path.join(out, "SOURCE.md"), encoding="utf-8").read().split("## Packages")[0])


if __name__ == "__main__":
    main()
