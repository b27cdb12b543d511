#!/usr/bin/env python3
"""Build the small supervised contrastive set in data/supervised/ from Debian 12 (stdlib only).

Rows are real English/Bulgarian pairs of one UI message: the English msgid and the Bulgarian
msgstr of the gettext .mo catalogs (usr/share/**/locale/bg/LC_MESSAGES/*.mo) of the packages
in TRAIN_PACKAGES / VALIDATION_PACKAGES (validation comes from other packages than train).
Each row has one hard negative: the Bulgarian translation of a different msgid of the same
package that shares the most words with the positive.

The packages are disjoint from the training corpus (data/bg/SOURCE.md "Used here"), from the
packages reserved for outside evaluation (libreoffice-l10n-*, fortunes-*, ...) and from every
package of the evaluation sets (scripts/build_eval_sets.py PACKAGES and data/eval/SOURCE.md);
no text equal (up to case, punctuation and whitespace) to a line of data/bg/train.txt,
data/bg/validation.txt or a text of data/eval/**/*.jsonl is kept.  The script refuses to write
if a check fails.  Reuses the helpers of scripts/build_eval_sets.py; needs dpkg-deb and
apt-get (to download missing .debs into WORK/debs):

    python3 scripts/build_supervised_set.py [--output data/supervised] [--work /tmp/bg2vec-eval-build]

Output is deterministic for a given set of .debs (sorted input, random.Random(0)).
"""
import argparse, fnmatch, glob, gettext, io, json, os, random, re, sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_eval_sets as ev  # noqa: E402  (helpers: norm, clean_en, read_deb, ...)

ROOT = ev.ROOT
EVAL_DIR = os.path.join(ROOT, "data", "eval")
EVAL_SOURCE_MD = os.path.join(EVAL_DIR, "SOURCE.md")
INSTRUCTION = "Retrieve the Bulgarian translation of the English text; "

# Bookworm packages with Bulgarian .mo catalogs, none in a forbidden list (checked at run time).
TRAIN_PACKAGES = (
    "caja-extensions-common", "cinnamon-l10n", "gcr", "glib-networking-common",
    "gnome-color-manager", "gnome-dictionary", "gnome-initial-setup", "gnome-nettool",
    "gnome-photos", "gsettings-desktop-schemas", "gstreamer1.0-plugins-good", "k3b-i18n",
    "kate5-data", "kdeconnect", "kolourpaint", "konqueror", "libgstreamer1.0-0",
    "libgweather-4-common", "libmateweather-common", "libxfce4ui-common", "mate-calc-common",
    "mate-session-manager", "metacity-common", "orca", "rygel", "tracker-extract", "xarchiver",
    "xfwm4", "zenity-common",
)
VALIDATION_PACKAGES = (
    "gnome-mines", "gnome-power-manager", "gnome-text-editor", "gnote", "nano", "wget",
    "xfce4-dict",
)
PACKAGES = TRAIN_PACKAGES + VALIDATION_PACKAGES

N_TRAIN, N_VALIDATION = 1200, 200
CAP_TRAIN, CAP_VALIDATION = 80, 45      # rows per package at most (diversity)
MIN_WORDS, MAX_WORDS = 3, 30
NEG_MIN_LETTERS = 3                     # words counted for the hard-negative overlap


# --- forbidden lists ------------------------------------------------------------------------
def parse_eval_source_md(path=EVAL_SOURCE_MD):
    """Every package named in data/eval/SOURCE.md: the machine-readable `task package version`
    block and the package column of the catalog table."""
    text = open(path, encoding="utf-8").read()
    pkgs = set()
    block = text.split("## Packages (machine-readable)", 1)[1].split("```text", 1)[1]
    for line in block.split("```", 1)[0].splitlines():
        parts = line.split()
        if len(parts) == 3:
            pkgs.add(parts[1])
    table = text.split("## Bulgarian catalog packages", 1)[1].split("\n## ", 1)[0]
    for m in re.finditer(r"^\| ([a-z0-9][a-z0-9.+-]+) \|", table, re.M):
        if m.group(1) != "package":
            pkgs.add(m.group(1))
    return pkgs


def forbidden_lists():
    reserved, used = ev.check_forbidden_lists()   # parses data/bg/SOURCE.md, compares constants
    eval_pkgs = set(ev.PACKAGES) | parse_eval_source_md()
    return set(reserved) | set(ev.RESERVED), set(used) | set(ev.USED_FOR_TRAINING), eval_pkgs


def check_packages(reserved, used, eval_pkgs):
    if set(TRAIN_PACKAGES) & set(VALIDATION_PACKAGES):
        raise SystemExit("train and validation packages overlap")
    bad = [p for p in PACKAGES
           if p in used or p in eval_pkgs or any(fnmatch.fnmatch(p, r) for r in reserved)]
    if bad:
        raise SystemExit(f"forbidden packages in PACKAGES: {bad}")


def eval_texts():
    keys = set()
    for path in sorted(glob.glob(os.path.join(EVAL_DIR, "**", "*.jsonl"), recursive=True)):
        for line in open(path, encoding="utf-8"):
            if line.strip():
                for t in ev.all_texts(json.loads(line)):
                    if isinstance(t, str):
                        keys.add(ev.norm(t))
    keys.discard("")
    return keys


def train_texts():
    keys = set()
    for p in ev.TRAIN_FILES:
        keys.update(ev.norm(l) for l in open(p, encoding="utf-8") if l.strip())
    keys.discard("")
    return keys


# --- reading .debs --------------------------------------------------------------------------
def fetch_debs(work):
    return ev.fetch_debs(work, PACKAGES)


def singular_pairs(data):
    """(msgid, msgstr) of a .mo catalog: msgctxt dropped, plural entries skipped."""
    cat = gettext.GNUTranslations(io.BytesIO(data))._catalog
    for k, v in cat.items():
        if isinstance(k, tuple) or not k or not v:
            continue
        yield k.split("\x04")[-1], v


def catalog_rows(mos):
    """Sorted, cleaned (en, bg) pairs of one package (all its Bulgarian catalogs)."""
    out = set()
    for path in sorted(mos):
        for msgid, msgstr in singular_pairs(mos[path]):
            en = ev.clean_en(msgid, MIN_WORDS)
            bg = ev.clean_bg(msgstr, MIN_WORDS)
            if en and bg and len(en.split()) <= MAX_WORDS and len(bg.split()) <= MAX_WORDS + 10 \
                    and ev.norm(en) and ev.norm(bg) and ev.norm(en) != ev.norm(bg):
                out.add((en, bg))
    return sorted(out)


def neg_pool(mos):
    """Sorted (en, bg) of every cleaned pair of the package (>= 2 words), for negatives."""
    out = set()
    for path in sorted(mos):
        for msgid, msgstr in singular_pairs(mos[path]):
            en, bg = ev.clean_en(msgid, 1), ev.clean_bg(msgstr, 2)
            if en and bg:
                out.add((en, bg))
    return sorted(out)


def content_words(text):
    return {w for w in ev.words(text) if len(w) >= NEG_MIN_LETTERS}


def hard_negative(en, bg, pool, banned):
    """Bulgarian text of another msgid of the package with the most shared words (>= 3
    letters) with bg; ties: higher word Jaccard, then the text itself (sorted order)."""
    wb, ken, kbg = content_words(bg), ev.norm(en), ev.norm(bg)
    best = None
    for pen, pbg in pool:
        kp = ev.norm(pbg)
        if ev.norm(pen) == ken or kp == kbg or kp in banned:
            continue
        shared = len(wb & content_words(pbg))
        key = (-shared, -ev.jaccard(bg, pbg), pbg)
        if best is None or key < best[0]:
            best = (key, pbg)
    return best[1] if best else None


# --- build ----------------------------------------------------------------------------------
def build_split(pkgs, catalogs, pools, cap, n, seen, banned, drops):
    """Rows of one split: dedup on both sides (against `seen` too), drop overlap with the
    training/eval texts, sample `cap` per package, shuffle, cut to n."""
    per_pkg = {}
    for pkg in sorted(pkgs):
        rows = []
        for en, bg in catalogs[pkg]:
            ke, kb = ev.norm(en), ev.norm(bg)
            if ke in banned["train"] or kb in banned["train"]:
                drops["train_text"] += 1
                continue
            if ke in banned["eval"] or kb in banned["eval"]:
                drops["eval_text"] += 1
                continue
            if ke in seen or kb in seen:
                drops["duplicate"] += 1
                continue
            seen.update((ke, kb))
            rows.append((en, bg))
        per_pkg[pkg] = rows
    rng = random.Random(0)
    chosen = []
    for pkg in sorted(per_pkg):
        rows = list(per_pkg[pkg])
        rng.shuffle(rows)
        chosen.extend((pkg, en, bg) for en, bg in rows[:cap])
    rng.shuffle(chosen)
    chosen = chosen[:n]
    return chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=os.path.join(ROOT, "data", "supervised"))
    ap.add_argument("--work", default="/tmp/bg2vec-eval-build")
    args = ap.parse_args()

    reserved, used, eval_pkgs = forbidden_lists()
    check_packages(reserved, used, eval_pkgs)
    banned = {"train": train_texts(), "eval": eval_texts()}
    banned_all = banned["train"] | banned["eval"]

    debs = fetch_debs(args.work)
    versions, licences, catalogs, pools = {}, {}, {}, {}
    for pkg in PACKAGES:
        versions[pkg], mos, cr = ev.read_deb(debs[pkg], pkg)
        if not mos:
            raise SystemExit(f"{pkg} has no Bulgarian .mo catalog")
        licences[pkg] = ev.licence_of(cr)
        catalogs[pkg], pools[pkg] = catalog_rows(mos), neg_pool(mos)

    drops = {"validation": defaultdict(int), "train": defaultdict(int)}
    seen = set()
    # validation first (smaller); train may not repeat any of its texts
    val = build_split(VALIDATION_PACKAGES, catalogs, pools, CAP_VALIDATION, N_VALIDATION, seen,
                      banned, drops["validation"])
    train = build_split(TRAIN_PACKAGES, catalogs, pools, CAP_TRAIN, N_TRAIN, seen, banned,
                        drops["train"])
    # negatives: never a training/eval text, never a query/positive text of the other split
    split_keys = {name: {ev.norm(t) for _, en, bg in rows for t in (en, bg)}
                  for name, rows in (("train", train), ("validation", val))}
    out_rows, no_neg = {}, defaultdict(int)
    for name, rows, other in (("train", train, "validation"), ("validation", val, "train")):
        res = []
        for pkg, en, bg in rows:
            neg = hard_negative(en, bg, pools[pkg], banned_all | split_keys[other])
            if neg is None:
                no_neg[name] += 1
                continue
            res.append(({"query": en, "positive": bg, "negative": [neg],
                         "instruction": INSTRUCTION}, pkg))
        out_rows[name] = res

    # --- checks (refuse to write if violated) ---
    all_q, all_p = set(), set()
    for name, rows in out_rows.items():
        for row, pkg in rows:
            if pkg not in PACKAGES:
                raise SystemExit(f"unknown package {pkg}")
            for t in [row["query"], row["positive"]] + row["negative"]:
                if not t.strip() or ev.norm(t) in banned_all:
                    raise SystemExit(f"{name}: text equals a training/eval text: {t!r}")
            if ev.norm(row["negative"][0]) == ev.norm(row["positive"]):
                raise SystemExit(f"{name}: negative equals positive: {row!r}")
            kq, kp = ev.norm(row["query"]), ev.norm(row["positive"])
            if kq in all_q or kp in all_p:
                raise SystemExit(f"{name}: duplicate text: {row!r}")
            all_q.add(kq)
            all_p.add(kp)
    pk = {n: {p for _, p in rows} for n, rows in out_rows.items()}
    if pk["train"] & pk["validation"]:
        raise SystemExit("train and validation share packages")
    check_packages(reserved, used, eval_pkgs)

    out = args.output
    os.makedirs(out, exist_ok=True)
    for name in ("train", "validation"):
        ev.write_jsonl(os.path.join(out, name + ".jsonl"), [r for r, _ in out_rows[name]])
    write_source_md(out, out_rows, versions, licences, drops, no_neg, reserved, used, eval_pkgs)
    print(open(os.path.join(out, "SOURCE.md"), encoding="utf-8").read().split(
        "## Packages (machine-readable)")[0])


def write_source_md(out, out_rows, versions, licences, drops, no_neg, reserved, used,
                    eval_pkgs):
    L = []
    add = L.append
    counts = {n: len(r) for n, r in out_rows.items()}
    per_pkg = {n: defaultdict(int) for n in out_rows}
    for n, rows in out_rows.items():
        for _, p in rows:
            per_pkg[n][p] += 1
    add("# Supervised set: where it comes from\n")
    add("A small supervised contrastive set (English query, Bulgarian positive, one Bulgarian "
        "hard negative), rebuilt by `scripts/build_supervised_set.py` (stdlib only; it reuses "
        "the helpers of `scripts/build_eval_sets.py`) from Debian 12 (bookworm) gettext "
        "catalogs. Every text was written by people (upstream developers and volunteer "
        "translators); nothing was generated or translated by us. Rows are chosen "
        "deterministically (sorted input, `random.Random(0)`).\n")
    add("## Files\n")
    add("| file | rows | packages |")
    add("| --- | --- | --- |")
    for n in ("train", "validation"):
        add(f"| `{n}.jsonl` | {counts[n]} | {len(per_pkg[n])} |")
    add("")
    add("One JSON object per line (UTF-8): `{\"query\": English msgid, \"positive\": its "
        "Bulgarian msgstr, \"negative\": [Bulgarian msgstr of another msgid of the same "
        f"package], \"instruction\": \"{INSTRUCTION}\"}}`.\n")
    add("## How it is built\n")
    add("- Every `usr/share/**/locale/bg/LC_MESSAGES/*.mo` of the packages below is read with "
        "`gettext.GNUTranslations`; msgctxt is dropped and plural entries are skipped.")
    add("- Cleaning as in `build_eval_sets.py` (`clean_en`, `clean_bg`): access keys (`_`, "
        "`~`, `&`) removed; a string is dropped (not patched) if it has several lines, markup, "
        "placeholders or symbols (`% $ \\ { } < > | @ # = [ ] ^ \\` & * _ ~`), an ellipsis, a "
        "URL, a file name or a command-line option. English: "
        f"{MIN_WORDS}-{MAX_WORDS} words, >= 95% Latin letters, starts upper-case. Bulgarian: "
        f"{MIN_WORDS}-{MAX_WORDS + 10} words, >= 85% Cyrillic letters, not equal to the English.")
    add("- Split by package: validation rows come only from the validation packages, train rows "
        "only from the train packages. Validation is built first. Within and across the two "
        "files each English text and each Bulgarian positive occurs once (normalised: NFC, "
        "lower-case, letters and digits only); when a text repeats, the first pair in "
        "(package, msgid) order is kept.")
    add(f"- Per package at most {CAP_VALIDATION} (validation) / {CAP_TRAIN} (train) pairs, "
        "drawn with `random.Random(0)`; the pooled rows are shuffled and cut to "
        f"{N_VALIDATION} / {N_TRAIN}.")
    add("- Hard negative: among the cleaned pairs (Bulgarian >= 2 words) of *other* msgids of "
        "the same package (English differs after normalisation), the Bulgarian text sharing "
        f"the most words of >= {NEG_MIN_LETTERS} letters with the positive; ties: higher word "
        "Jaccard, then the text in sorted order. Never equal to the positive, never a "
        "training/evaluation text, never a query or positive of the other file. Lexical "
        "negatives can occasionally be near-paraphrases of the positive.")
    add("")
    add("## Separation\n")
    add("The build stops if any package used here is on one of these lists (parsed at build "
        "time):\n")
    add("- reserved for outside evaluation (`data/bg/SOURCE.md`): "
        + ", ".join(f"`{r}`" for r in sorted(reserved)))
    add("- used for train/validation/eval_pairs (`data/bg/SOURCE.md` \"Used here\"): "
        + ", ".join(sorted(used)))
    add(f"- evaluation sets: the {len(ev.PACKAGES)} catalog packages of "
        "`scripts/build_eval_sets.py` `PACKAGES` and every package named in "
        f"`data/eval/SOURCE.md` ({len(eval_pkgs)} packages in all; not repeated here).")
    add("")
    add("Results of the checks:\n")
    add("- No package used here is on any of these lists; train and validation packages are "
        "disjoint.")
    for n in ("validation", "train"):
        d = drops[n]
        add(f"- {n}: candidate pairs dropped because a side equals a line of "
            f"`data/bg/train.txt`/`validation.txt`: {d['train_text']}; because a side equals a "
            f"text of `data/eval/**/*.jsonl`: {d['eval_text']}; as duplicates: "
            f"{d['duplicate']}; for lack of a hard negative: {no_neg[n]}.")
    add("- No written text (query, positive or negative) equals a training line or an "
        "evaluation text (verified again before writing).")
    add("")
    add("## Files and sha256\n")
    add("```")
    for n in ("train", "validation"):
        add(f"{ev.sha256(os.path.join(out, n + '.jsonl'))}  {n}.jsonl")
    add("```\n")
    total = sum(os.path.getsize(os.path.join(out, n + ".jsonl")) for n in ("train", "validation"))
    add(f"Total size of the two files: {total:,} bytes.\n")
    add("## Packages\n")
    add("Licence: from `usr/share/doc/PKG/copyright`, as in `build_eval_sets.py`: in DEP-5 "
        "files the `License:` of the last `Files:` paragraph that covers `po/bg.po` (`Files: *` "
        "included), else the most frequent `License:` field; in free-form files the licence "
        "named in the text. The translations are distributed as part of each package, under "
        "its licence.\n")
    add("| package | version | licence | split | rows |")
    add("| --- | --- | --- | --- | --- |")
    for p in sorted(PACKAGES):
        split = "validation" if p in VALIDATION_PACKAGES else "train"
        add(f"| {p} | {versions[p]} | {licences[p].replace('|', '/')} | {split} | "
            f"{per_pkg[split].get(p, 0)} |")
    add("")
    add("## Packages (machine-readable)\n")
    add("Every package read, one per line: `split package version`.\n")
    add("```text")
    for n, pkgs in (("train", TRAIN_PACKAGES), ("validation", VALIDATION_PACKAGES)):
        for p in sorted(pkgs):
            add(f"{n} {p} {versions[p]}")
    add("```\n")
    add("## Rebuild\n")
    add("```bash\npython3 scripts/build_supervised_set.py --output data/supervised "
        "--work /tmp/bg2vec-eval-build\n```\n")
    add("Missing .debs are downloaded with `apt-get download` into `WORK/debs` (shared with "
        "`build_eval_sets.py`). Files are identical for the same .debs; a Debian point release "
        "can change versions and so rows.")
    with open(os.path.join(out, "SOURCE.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
