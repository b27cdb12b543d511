#!/usr/bin/env python3
"""Rebuild the small Bulgarian corpus in data/bg/ from Debian packages (stdlib only).

Texts are Bulgarian translations shipped in Debian 12 packages (see data/bg/SOURCE.md):
gettext .mo catalogs (desktop apps, Wesnoth's unit and help texts), Fluent/.properties/.dtd
files in Mozilla langpacks (.xpi) and Mallard help pages.  Packages reserved for outside
evaluation (RESERVED) are never read.  Needs dpkg-deb; --download fetches missing .debs with
`apt-get download`.  Output is deterministic for a given set of .debs:

    python3 scripts/build_bg_corpus.py --debs /tmp/bgdeb --download
"""
import argparse, fnmatch, glob, gettext, html, io, os, random, re, shutil, subprocess, unicodedata, zipfile
import xml.etree.ElementTree as ET

# Reserved for outside evaluation: never downloaded, read or used here (not even for pairs),
# so an evaluation set built from them stays unseen by anything trained on this corpus.
RESERVED = ("libreoffice-l10n-*", "fortunes-*", "mythes-*", "wordnet*", "freedict-*",
            "dict-freedict-*")

# package -> role.  "train"/"validation" texts are split by package so near-duplicate UI
# strings from one catalog cannot leak across the split; "pairs" catalogs only help to find
# eval pairs and contribute no text to train/validation.
PACKAGES = {
    "firefox-esr-l10n-bg": "train", "thunderbird-l10n-bg": "train",
    "wesnoth-1.16-data": "train", "vlc-l10n": "train", "gnucash-common": "train",
    "evolution-common": "train", "gramps": "train", "korganizer": "train", "kmail": "train",
    "gimp-data": "train", "inkscape": "train", "gnome-control-center-data": "train",
    "nautilus-data": "train", "synaptic": "train", "apt": "train",
    "gedit-common": "validation", "totem-common": "validation", "rhythmbox-data": "validation",
    "gnome-software-common": "validation", "gnome-disk-utility": "validation",
    "libgtk-3-common": "pairs", "evolution-data-server-common": "pairs", "coreutils": "pairs",
    "libc-l10n": "pairs", "tar": "pairs", "gettext": "pairs",
}
if [p for p in PACKAGES if any(fnmatch.fnmatch(p, r) for r in RESERVED)]:
    raise SystemExit("PACKAGES lists a package reserved for outside evaluation")
MAX_PKG_BYTES = 200_000      # cap per package and split (Wesnoth has ~400 kB, Firefox ~225 kB)
N_PAIRS = 25                 # positive eval pairs (and as many negatives)
MIN_WORDS, MIN_CYR = 5, 0.85

CYR, LAT = re.compile(r"[\u0400-\u04FF]"), re.compile(r"[A-Za-z]")
TAG = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
BAD = re.compile(r"[%$\\{}<>|@#=\[\]^`&]|https?:|www\.|\w\.\w{2,4}\b|\s-\w")
SENTENCE_END = re.compile(r"[.!?…][\"“»)]?$")


def clean(text, min_words=MIN_WORDS):
    """Return a cleaned one-line text, or None if it is not natural Bulgarian text."""
    t = TAG.sub("", text)                     # markup such as <b>, <a href=...>
    t = html.unescape(t)                      # &amp; &quot; ...
    t = re.sub(r"[_~](?=\w)|(?<!\S)&(?=\w)", "", t)  # access keys: _Файл, От~вори, &Файл
    t = re.sub(r"[\u00ad\u200b-\u200f\u2060\ufeff]", "", t)  # soft hyphen, zero-width
    t = unicodedata.normalize("NFC", " ".join(t.split()))
    if not t or BAD.search(t) or len(t.split()) < min_words:
        return None                           # placeholders, URLs, file names, options left
    c, l = len(CYR.findall(t)), len(LAT.findall(t))
    return t if c >= MIN_CYR * (c + l) else None


def key(t):  # de-duplication key: case- and punctuation-insensitive
    return " ".join(re.findall(r"\w+", t.lower()))


def mo_items(source):
    """(msgid, text) from a gettext .mo (a path, or its bytes), one per paragraph;
    option-table paragraphs dropped."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with handle:
        cat = gettext.GNUTranslations(handle)._catalog
    for k, v in cat.items():
        if isinstance(k, tuple):              # plural forms: keep the singular only
            k = k[0] if k[1] == 0 else ""
        if not k:
            continue                          # header / other plural forms
        msgid = k.split("\x04")[-1]           # drop msgctxt
        for para in re.split(r"\n\s*\n", v):
            lines = para.split("\n")
            if any(re.match(r"\s*([-•*\[]|\S+\s{2,})", ln) for ln in lines if ln.strip()):
                continue
            yield msgid, " ".join(lines)


FTL_ENTRY = re.compile(r"^(-?[A-Za-z][\w-]*)\s*=\s?(.*)$")
FTL_ATTR = re.compile(r"^\s+\.([\w-]+)\s*=\s?(.*)$")
SKIP_ATTRS = {"accesskey", "key", "commandkey", "style", "width", "height", "searchkeywords"}


def ftl_items(text, terms):
    """(id, value) from a Fluent file; term references are resolved from `terms`."""
    entries, cur = [], None
    for line in text.splitlines():
        m, a = FTL_ENTRY.match(line), FTL_ATTR.match(line)
        if not line.strip() or line.startswith("#"):
            cur = None                        # blank line or comment ends an entry
        elif m:
            cur = [m.group(1), m.group(2)]
            entries.append(cur)
        elif a and cur:
            cur = [entries[-1][0].split(".")[0] + "." + a.group(1), a.group(2)]
            entries.append(cur)
        elif cur and line[:1].isspace():
            cur[1] += "\n" + line.strip()
    terms.update({i: v.strip() for i, v in entries if i.startswith("-") and i not in terms})
    for ident, val in entries:
        if ident.startswith("-") or ident.rsplit(".", 1)[-1] in SKIP_ATTRS:
            continue
        val = re.sub(r'\{\s*"([^"]*)"\s*\}', r"\1", val)
        val = re.sub(r"\{\s*(-[\w-]+)\s*\}", lambda m: terms.get(m.group(1), m.group(0)), val)
        yield ident, val


def xpi_items(path):
    z, terms = zipfile.ZipFile(path), {}
    names = sorted(n for n in z.namelist() if n.endswith((".ftl", ".properties", ".dtd")))
    names.sort(key=lambda n: "brand" not in n)  # read brand terms first
    for n in names:
        text = z.read(n).decode("utf-8", "replace")
        items = (ftl_items(text, terms) if n.endswith(".ftl") else
                 re.findall(r'<!ENTITY\s+(\S+)\s+"([^"]*)"\s*>', text) if n.endswith(".dtd") else
                 [l.split("=", 1) for l in text.splitlines()       # .properties
                  if "=" in l and not l.lstrip().startswith(("#", "!"))])
        for ident, val in items:
            yield n, ident.strip(), val.strip().replace("\\n", "\n")


def page_items(path):
    """Texts of the <p>, <title> and <desc> elements of a Mallard help page."""
    for el in ET.parse(path).getroot().iter():
        if el.tag.rsplit("}", 1)[-1] in ("p", "title", "desc"):
            yield "".join(el.itertext())


def documents(root):
    """Yield (source_file, msgid_or_None, raw_text) for every text in an extracted package."""
    for p in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        rel = os.path.relpath(p, root)        # match on `rel`: --debs may contain "/bg/"
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        if rel.endswith(".mo") and "/bg/" in rel:
            yield from ((rel, k, v) for k, v in mo_items(p))
        elif rel.endswith(".xpi"):
            yield from ((rel + "!" + n, None, v) for n, _, v in xpi_items(p))
        elif rel.endswith(".page") and "/help/bg/" in rel:
            yield from ((rel, None, v) for v in page_items(p))


def extract(debs, download):
    roots, versions = {}, {}
    os.makedirs(debs, exist_ok=True)
    for pkg in PACKAGES:
        found = sorted(glob.glob(os.path.join(debs, pkg + "_*.deb")))
        if not found and download:
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            found = sorted(glob.glob(os.path.join(debs, pkg + "_*.deb")))
        if not found:
            raise SystemExit(f"missing {pkg}_*.deb in {debs} (use --download)")
        deb, roots[pkg] = found[-1], os.path.join(debs, "extracted", pkg)
        shutil.rmtree(roots[pkg], ignore_errors=True)   # always extract afresh
        os.makedirs(roots[pkg])
        subprocess.run(["dpkg-deb", "-x", deb, roots[pkg]], check=True)
        versions[pkg] = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                                       capture_output=True, text=True).stdout.strip()
    return roots, versions


def eval_pairs(by_msgid):
    """Label 1: one English msgid translated with clearly different wording in two catalogs.
    Label 0: sentence 1 of a pair with sentence 2 of the next pair sharing no word stem."""
    def overlap(a, b):
        a, b = set(key(a).split()), set(key(b).split())
        return len(a & b) / len(a | b)
    def stems(*texts):                        # crude content-word stems (Bulgarian, English)
        return {w[:5] for t in texts for w in key(t).split() if len(w) >= 4}
    cands, per_source = [], {}
    for msgid, trans in sorted(by_msgid.items()):
        v = sorted(trans.values())
        best = min(((overlap(x[0], y[0]), x[0], y[0], "+".join(sorted(
            (x[1].split(":")[0], y[1].split(":")[0])))) for i, x in enumerate(v)
            for y in v[i + 1:] if x[1] != y[1]), default=None)
        if best and best[0] <= 0.5 and min(len(best[1].split()), len(best[2].split())) >= 4:
            cands.append((msgid, *best[1:]))
    random.Random(13).shuffle(cands)
    picked = []                               # at most 4 pairs per pair of packages
    for msgid, a, b, pkgs in cands:
        per_source[pkgs] = per_source.get(pkgs, 0) + 1
        picked += [(msgid, a, b)] if per_source[pkgs] <= 4 else []
    picked = picked[:N_PAIRS]
    neg = []
    for i, (m, a, _) in enumerate(picked):
        for j in range(i + 1, i + len(picked)):
            m2, _, b = picked[j % len(picked)]
            if not stems(m, a) & stems(m2, b):
                neg.append((a, b))
                break
    return picked, neg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", default="/tmp/bgdeb")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "bg"))
    ap.add_argument("--download", action="store_true", help="apt-get download missing .debs")
    args = ap.parse_args()
    roots, versions = extract(args.debs, args.download)

    texts = {"train": [], "validation": []}   # (pkg, msgid, text) in source order
    by_msgid = {}                             # English msgid -> {text key: (text, source)}
    for pkg, role in PACKAGES.items():
        for src, msgid, raw in documents(roots[pkg]):
            t = clean(raw, min_words=3)
            if t and msgid and len(msgid.split()) >= 3:
                by_msgid.setdefault(msgid, {}).setdefault(key(t), (t, pkg + ":" + src))
            if t and role != "pairs" and len(t.split()) >= MIN_WORDS and SENTENCE_END.search(t):
                texts[role].append((pkg, msgid, t))

    picked, neg = eval_pairs(by_msgid)
    pos = [(a, b) for _, a, b in picked]
    reserved_ids = {m for m, _, _ in picked}  # every translation of these msgids is held out
    reserved = {x for p in pos for x in p}    # ... and any line containing a pair sentence
    seen = {key(x) for x in reserved}

    out = {}
    for split in ("train", "validation"):     # train first: validation drops anything seen
        items, lines, used = texts[split], [], {}
        random.Random(0).shuffle(items)
        for pkg, msgid, t in items:
            size = len(t.encode()) + 1
            if (msgid in reserved_ids or key(t) in seen or used.get(pkg, 0) + size > MAX_PKG_BYTES
                    or any(x in t for x in reserved)):
                continue
            seen.add(key(t))
            used[pkg] = used.get(pkg, 0) + size
            lines.append(t)
        out[split] = lines

    os.makedirs(args.out, exist_ok=True)
    for split, lines in out.items():
        open(os.path.join(args.out, split + ".txt"), "w", encoding="utf-8").write(
            "\n".join(lines) + "\n")
    rows = [(a, b, 1) for a, b in pos] + [(a, b, 0) for a, b in neg]
    random.Random(1).shuffle(rows)
    with open(os.path.join(args.out, "eval_pairs.tsv"), "w", encoding="utf-8") as f:
        f.write("sentence1\tsentence2\tlabel\n")
        f.writelines(f"{a}\t{b}\t{y}\n" for a, b, y in rows)
    print("\n".join(f"{pkg}\t{versions[pkg]}\t{role}" for pkg, role in PACKAGES.items()))
    for name in ("train.txt", "validation.txt", "eval_pairs.tsv"):
        p = os.path.join(args.out, name)
        print(f"{name}: {len(open(p, 'rb').read().splitlines())} lines, {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
