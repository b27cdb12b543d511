#!/usr/bin/env python3
"""Build the small offline evaluation sets in data/eval/ from Debian 12 packages (stdlib only).

Every text is real text written by people, taken from Debian 12 ("bookworm"):

* Bulgarian/English pairs: the English msgid and the Bulgarian msgstr of the gettext .mo
  catalogs (usr/share/**/locale/bg/LC_MESSAGES/*.mo) of the packages in PACKAGES.
* English package descriptions: the bookworm `main` archive metadata (binary-amd64 Packages
  and i18n/Translation-en, read from /var/lib/apt/lists after `apt-get update`).

No package used for the training corpus (data/bg/SOURCE.md, "Used here") and no package
reserved for outside evaluation (libreoffice-l10n-*, fortunes-*, ...) is read, and no text
equal (up to case, punctuation and whitespace) to a line of data/bg/train.txt or
validation.txt is kept.  The script refuses to write anything if these checks fail.
Needs dpkg-deb, lz4 (for the apt lists) and apt-get (to download missing .debs):

    python3 scripts/build_eval_sets.py [--output data/eval] [--work /tmp/bg2vec-eval-build]

Output is deterministic for a given set of .debs and apt lists (sorted input, seeded
random.Random sampling).
"""
import argparse, fnmatch, gettext, glob, hashlib, html, io, json, os, random, re, shutil
import subprocess, sys, tarfile, unicodedata
from collections import defaultdict

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BG_SOURCE_MD = os.path.join(ROOT, "data", "bg", "SOURCE.md")
TRAIN_FILES = [os.path.join(ROOT, "data", "bg", f) for f in ("train.txt", "validation.txt")]

# --- forbidden packages ---------------------------------------------------------------------
# Reserved for outside evaluation (same list as scripts/build_bg_corpus.py RESERVED).
RESERVED = ("libreoffice-l10n-*", "fortunes-*", "mythes-*", "wordnet*", "freedict-*",
            "dict-freedict-*")
# Constant copy of data/bg/SOURCE.md "Used here" (train, validation, eval_pairs catalogs).
# main() also parses that file and refuses to run if the two lists differ.
USED_FOR_TRAINING = (
    "firefox-esr-l10n-bg", "thunderbird-l10n-bg", "wesnoth-1.16-data", "vlc-l10n",
    "gnucash-common", "evolution-common", "gramps", "korganizer", "kmail", "gimp-data",
    "inkscape", "gnome-control-center-data", "nautilus-data", "synaptic", "apt",
    "gedit-common", "gnome-software-common", "gnome-disk-utility", "totem-common",
    "rhythmbox-data", "libgtk-3-common", "evolution-data-server-common", "coreutils",
    "libc-l10n", "tar", "gettext",
)

# Packages whose Bulgarian .mo catalogs are read (all ship usr/share/**/locale/bg/*.mo in
# bookworm; none is in RESERVED or USED_FOR_TRAINING; checked at run time).
PACKAGES = (
    "aisleriot", "ark", "atril-common", "baobab", "blueman", "brasero-common", "caja-common",
    "catfish", "cheese-common", "dconf-editor", "deja-dup", "devhelp-common", "dia-common",
    "dolphin", "engrampa-common", "eog", "eom-common", "epiphany-browser-data",
    "evince-common", "file-roller", "five-or-more", "four-in-a-row", "gdm3", "geany-common",
    "ghex", "gitg", "gnome-boxes", "gnome-calculator", "gnome-calendar", "gnome-characters",
    "gnome-chess", "gnome-clocks", "gnome-contacts", "gnome-desktop3-data",
    "gnome-font-viewer", "gnome-keyring", "gnome-klotski", "gnome-logs", "gnome-mahjongg",
    "gnome-maps", "gnome-music", "gnome-nibbles", "gnome-robots", "gnome-screenshot",
    "gnome-session-common", "gnome-settings-daemon-common", "gnome-shell-common",
    "gnome-sudoku", "gnome-system-monitor", "gnome-taquin", "gnome-terminal-data",
    "gnome-tetravex", "gnome-tweaks", "gnome-weather", "gnumeric-common", "gthumb-data",
    "gucharmap", "gvfs-common", "gwenview", "hexchat-common", "hitori", "homebank-data",
    "iagno", "kcalc", "konsole", "libfm-data", "libglib2.0-data", "libgnomekbd-common",
    "libkf5configwidgets-data", "libkf5kcmutils-data", "libkf5textwidgets-data",
    "libkf5xmlgui-data", "libwnck-3-common", "liferea-data", "lightdm", "lightsoff",
    "lxappearance", "lxpanel-data", "lxsession-data", "lxterminal", "marco-common",
    "mate-applets-common", "mate-control-center-common", "mate-desktop-common",
    "mate-media-common", "mate-panel-common", "mate-power-manager-common",
    "mate-screensaver-common", "mate-settings-daemon-common", "mate-system-monitor-common",
    "mate-terminal-common", "mate-utils-common", "meld", "mousepad", "mutter-common",
    "network-manager", "network-manager-gnome", "okular", "packagekit", "parole", "pcmanfm",
    "pidgin-data", "pluma-common", "quadrapassel", "ristretto", "seahorse", "shotwell-common",
    "simple-scan", "sound-juicer", "swell-foop", "sylpheed-i18n",
    "system-config-printer-common", "tali", "thunar-data", "thunar-volman", "udisks2",
    "xfburn", "xfce4-appfinder", "xfce4-clipman", "xfce4-mailwatch-plugin", "xfce4-notifyd",
    "xfce4-panel", "xfce4-power-manager-data", "xfce4-pulseaudio-plugin",
    "xfce4-screenshooter", "xfce4-session", "xfce4-settings", "xfce4-taskmanager",
    "xfce4-terminal", "xfce4-weather-plugin", "xfce4-whiskermenu-plugin", "xfdesktop4-data",
)

APT_LISTS = "/var/lib/apt/lists"
PACKAGES_LIST = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
TRANSLATION_LIST = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4"

# Sections whose descriptions are free prose (no language-binding / library templates).
APP_SECTIONS = ("admin", "database", "devel", "editors", "electronics", "embedded", "games",
                "gnome", "graphics", "hamradio", "interpreters", "kde", "mail", "math", "misc",
                "net", "news", "science", "shells", "sound", "tex", "text", "utils", "vcs",
                "video", "web", "x11", "xfce")
CLASS_SECTIONS = ("editors", "games", "graphics", "mail", "math", "net", "science", "sound")
CLUSTER_SECTIONS = ("admin", "database", "electronics", "hamradio", "tex", "vcs", "video",
                    "web")

N_BITEXT, BITEXT_PER_PKG = 300, 20
N_PARA_POS, N_TRIPLES = 150, 150
N_QUERIES, N_DISTRACTORS = 200, 800
N_CLASS_TRAIN, N_CLASS_TEST, N_CLUSTER = 40, 20, 30

# --- text helpers ---------------------------------------------------------------------------
CYR, LAT = re.compile(r"[\u0400-\u04FF]"), re.compile(r"[A-Za-z]")
TAG = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
BAD = re.compile(r"[%$\\{}<>|@#=\[\]^`&*_~]|https?:|www\.|\w\.\w{2,4}\b|\s-\w|\.\.\.|…")
SENTENCE_END = re.compile(r"[.!?][\"”»)]?$")


def norm(text):
    """Comparison key: NFC, lower-cased, only letters and digits (no punctuation/spaces)."""
    return "".join(c for c in unicodedata.normalize("NFC", text).lower() if c.isalnum())


def words(text):
    return re.findall(r"\w+", unicodedata.normalize("NFC", text).lower())


def jaccard(a, b):
    a, b = set(words(a)), set(words(b))
    return len(a & b) / max(1, len(a | b))


def clean_ui(text):
    """Remove access keys and collapse whitespace; None if markup/placeholders remain."""
    if "\n" in text.strip() or TAG.search(text):
        return None
    t = html.unescape(text) if "&" in text and ";" in text else text
    t = re.sub(r"[_~](?=\w)|(?<!\S)&(?=\w)", "", t)  # access keys: _File, &File
    t = re.sub(r"[\u00ad\u200b-\u200f\u2060\ufeff]", "", t)
    t = unicodedata.normalize("NFC", " ".join(t.split()))
    if not t or BAD.search(t):
        return None
    return t


def script_share(t, script):
    c, l = len(CYR.findall(t)), len(LAT.findall(t))
    return (c if script == "cyr" else l) / max(1, c + l)


def clean_en(msgid, min_words):
    t = clean_ui(msgid)
    if not t or len(t.split()) < min_words or len(t.split()) > 40:
        return None
    return t if script_share(t, "lat") >= 0.95 and t[0].isupper() else None


def clean_bg(msgstr, min_words=2):
    t = clean_ui(msgstr)
    if not t or len(t.split()) < min_words or len(t.split()) > 50:
        return None
    return t if script_share(t, "cyr") >= 0.85 else None


# --- forbidden lists ------------------------------------------------------------------------
PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


def parse_bg_source_md(path=BG_SOURCE_MD):
    """(reserved patterns, used packages) from data/bg/SOURCE.md."""
    text = open(path, encoding="utf-8").read()
    res_part = text.split("**Reserved for outside evaluation", 1)[1].split("**Used here.**")[0]
    reserved = set()
    for line in res_part.splitlines():
        m = re.match(r"\s*-\s+`([^`]+)`", line)
        if m:
            reserved.add(m.group(1))
        reserved.update(re.findall(r"`(dict-freedict-\*)`", line))
    used_part = text.split("**Used here.**", 1)[1].split("**Overlap with reserved", 1)[0]
    bullets, cur = [], None
    for line in used_part.splitlines():
        if re.match(r"- ", line):
            cur = [line[2:]]
            bullets.append(cur)
        elif cur is not None and line.startswith("  "):
            cur.append(line.strip())
    used = set()
    for b in bullets:
        for seg in " ".join(b).split(":")[1:]:
            seg = re.split(r"\.\s", seg.replace("**", ""))[0]
            for item in seg.split(","):
                item = item.strip().rstrip(".")
                if PKG_NAME.match(item):
                    used.add(item)
    return reserved, used


def forbidden(pkg, reserved=RESERVED, used=USED_FOR_TRAINING):
    return pkg in used or any(fnmatch.fnmatch(pkg, r) for r in reserved)


def check_forbidden_lists():
    reserved, used = parse_bg_source_md()
    if reserved != set(RESERVED):
        raise SystemExit(f"reserved list differs from data/bg/SOURCE.md: {sorted(reserved)}")
    if used != set(USED_FOR_TRAINING):
        raise SystemExit("USED_FOR_TRAINING differs from data/bg/SOURCE.md 'Used here': "
                         f"only in SOURCE.md {sorted(used - set(USED_FOR_TRAINING))}, "
                         f"only here {sorted(set(USED_FOR_TRAINING) - used)}")
    bad = [p for p in PACKAGES if forbidden(p) or forbidden(p, reserved, used)]
    if bad:
        raise SystemExit(f"PACKAGES contains forbidden packages: {bad}")
    return reserved, used


# --- reading .debs --------------------------------------------------------------------------
def fetch_debs(work, packages=PACKAGES):
    """The newest cached .deb of each package (apt-get download fetches the missing ones)."""
    debdir = os.path.join(work, "debs")
    os.makedirs(debdir, exist_ok=True)
    missing = [p for p in packages if not glob.glob(os.path.join(debdir, p + "_*.deb"))]
    if missing:
        print(f"apt-get download {len(missing)} packages ...", file=sys.stderr)
        subprocess.run(["apt-get", "download", *missing], cwd=debdir, check=True)
    debs = {}
    for p in packages:
        found = sorted(glob.glob(os.path.join(debdir, p + "_*.deb")))
        if not found:
            raise SystemExit(f"missing {p}_*.deb in {debdir}")
        if len(found) > 1:
            print(f"warning: several .debs for {p}, using {found[-1]}", file=sys.stderr)
        debs[p] = found[-1]
    return debs


BG_MO = re.compile(r"/locale/bg/LC_MESSAGES/[^/]+\.mo$")


def read_deb(deb, pkg, wanted=BG_MO):
    """Version, {path: bytes} of the files matching `wanted` (the Bulgarian .mo catalogs by
    default) and copyright text of one .deb (no extraction)."""
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    name = subprocess.run(["dpkg-deb", "-f", deb, "Package"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if name != pkg:
        raise SystemExit(f"{deb} is package {name}, expected {pkg}")
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    mos, copyright_text = {}, None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            path = m.name.lstrip("./")
            if not m.isfile():
                continue
            if wanted.search(path):
                mos[path] = tar.extractfile(m).read()
            elif path == f"usr/share/doc/{pkg}/copyright":
                copyright_text = tar.extractfile(m).read().decode("utf-8", "replace")
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"dpkg-deb failed on {deb}")
    return version, mos, copyright_text


LICENSE_WORDS = [(r"GPL-3\+|GPL-3.0\+|GPL-3.0-or-later|version 3 of the License, or", "GPL-3+"),
                 (r"GPL-2\+|GPL-2.0\+|GPL-2.0-or-later|version 2 of the License, or", "GPL-2+")]


def licence_of(copyright_text):
    """Short licence summary of a copyright file.  DEP-5: the License of the last `Files:`
    paragraph that covers the Bulgarian translation (po/bg.po, `*` included), else the most
    frequent License; otherwise the licence named in the text."""
    if not copyright_text:
        return "unknown (no copyright file)"
    paras = re.split(r"\n\s*\n", copyright_text)
    hit, counts = None, defaultdict(int)
    for p in paras:
        m_files = re.search(r"^Files:((?:.*)(?:\n[ \t].*)*)", p, re.M)
        m_lic = re.search(r"^License:[ \t]*(\S.*)$", p, re.M)
        if not (m_files and m_lic):
            continue
        lic = m_lic.group(1).strip()
        counts[lic] += 1
        pats = m_files.group(1).split()
        if any(fnmatch.fnmatch(t, pat) for pat in pats
               for t in ("po/bg.po", "po/bg/bg.po", "po/bg/x.po")):
            hit = lic
    if hit:
        return hit + " (Files covering po/bg.po)"
    if counts:
        return max(sorted(counts), key=counts.get) + " (most frequent License field)"
    t = " ".join(copyright_text.split())
    lesser = "Lesser" in t or "Library General" in t
    for pat, name in LICENSE_WORDS:
        if re.search(pat, t):
            return ("L" + name if lesser else name) + " (from text)"
    if "General Public License" in t:
        return ("LGPL" if lesser else "GPL") + " (from text)"
    return "see copyright file"


def mo_pairs(data):
    """(msgid, msgstr) of a .mo catalog; msgctxt dropped, singular form only."""
    cat = gettext.GNUTranslations(io.BytesIO(data))._catalog
    for k, v in sorted(cat.items(), key=lambda kv: str(kv[0])):
        if isinstance(k, tuple):
            if k[1] != 0:
                continue
            k = k[0]
        if k and v:
            yield k.split("\x04")[-1], v


# --- Bulgarian tasks ------------------------------------------------------------------------
STOP = set("a an the to of for and or in on at by with from as is are be this that it its "
           "your you all any not no into if whether true false will should when".split())
SYNONYMS = {}
for group in ("show display view print", "quit exit leave", "unable cannot could fail failed "
              "failure error can couldn't can't", "folder directory", "delete remove erase",
              "begin start launch run", "picture image photo", "app application program",
              "preferences settings options configuration configure setup",
              "create new make add", "select choose pick", "modify change edit",
              "help manual", "version release", "file document text", "close exit",
              "find search look", "current active this", "enable turn activate",
              "disable deactivate", "open load", "save store keep", "window dialog",
              "item entry element object", "location place position", "button key",
              "information info details", "password passphrase", "computer machine system",
              "battery power charge", "switch go move jump"):
    for w in group.split():
        SYNONYMS.setdefault(w, group.split()[0])


def content_stems(en):
    """Crude English content-word stems: stop words dropped, plural -s removed, a few UI
    synonyms merged, then the first 5 letters (coarse on purpose: fewer false negatives)."""
    out = set()
    for w in words(en):
        if w in STOP or len(w) < 3:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(SYNONYMS.get(w, w)[:5])
    return out


def collect_bg(catalogs):
    """catalogs: {pkg: {path: bytes}} -> (bitext pool, translations by msgid)."""
    by_msgid = defaultdict(dict)        # clean English -> {pkg: clean Bulgarian}
    for pkg in sorted(catalogs):
        for path in sorted(catalogs[pkg]):
            for msgid, msgstr in mo_pairs(catalogs[pkg][path]):
                en, bg = clean_en(msgid, 2), clean_bg(msgstr)
                if en and bg:
                    by_msgid[en].setdefault(pkg, bg)
    return by_msgid


def build_bitext(by_msgid, drop):
    pool = []
    for en in sorted(by_msgid):
        if len(en.split()) < 4 or not SENTENCE_END.search(en):
            continue
        pkg = sorted(by_msgid[en])[0]
        bg = by_msgid[en][pkg]
        if len(bg.split()) < 3 or not 0.5 <= len(bg) / len(en) <= 2.5:
            continue
        pool.append((en, bg, pkg))
    random.Random(0).shuffle(pool)
    rows, seen, per_pkg = [], set(), defaultdict(int)
    for en, bg, pkg in pool:
        if norm(en) in seen or norm(bg) in seen or per_pkg[pkg] >= BITEXT_PER_PKG:
            continue
        if drop(en, bg):
            continue
        seen.update((norm(en), norm(bg)))
        per_pkg[pkg] += 1
        rows.append(({"sentence1": bg, "sentence2": en}, [pkg]))
        if len(rows) == N_BITEXT:
            break
    return rows


def paraphrase_candidates(by_msgid):
    """msgids with two clearly different translations in two packages."""
    cands = []
    for en in sorted(by_msgid):
        trans = sorted(by_msgid[en].items())
        best = None
        for i, (pa, a) in enumerate(trans):
            for pb, b in trans[i + 1:]:
                if norm(a) == norm(b) or len(words(a)) < 2 or len(words(b)) < 2:
                    continue
                j = jaccard(a, b)
                if j <= 0.8 and (best is None or j < best[0]):
                    best = (j, pa, a, pb, b)
        if best:
            cands.append((en, *best[1:]))
    return cands


def differs(x, y):
    """True if stem set x has a stem that no stem of y shares its first 4 letters with."""
    return any(not any(a[:4] == b[:4] for b in y) for a in x)


def hard_negative(en, anchor, pkg, pool, index, exclude):
    """A translation, in the same package `pkg`, of another msgid whose Bulgarian text shares
    most words with `anchor`, while the English msgids differ in content words both ways.
    Two different msgids of one application almost always name different things, so the
    negative is not a paraphrase."""
    stems, aw = content_stems(en), set(words(anchor))
    content = lambda t: {w for w in words(t) if len(w) >= 4}
    ac = content(anchor)
    cand_ids = set()
    for w in aw:
        if len(w) >= 4:
            cand_ids.update(index.get(w, ()))
    best = None
    for i in sorted(cand_ids):
        en2, pkg2, c = pool[i]
        if en2 == en or pkg2 != pkg or norm(c) in exclude:
            continue
        s2 = content_stems(en2)
        if not differs(stems, s2) or not differs(s2, stems):
            continue
        cc = content(c)
        j = len(ac & cc) / max(1, len(ac | cc))
        if 0.2 <= j < 0.9 and (best is None or j > best[0]):
            best = (j, en2, pkg2, c)
    return best


def build_pairs_and_triples(by_msgid, drop):
    cands = paraphrase_candidates(by_msgid)
    random.Random(0).shuffle(cands)
    pool = sorted((en, pkg, bg) for en, t in by_msgid.items() for pkg, bg in t.items())
    index = defaultdict(list)
    for i, (_, _, bg) in enumerate(pool):
        for w in set(words(bg)):
            if len(w) >= 4:
                index[w].append(i)
    pairs, triples, seen, n_pos = [], [], set(), 0
    for en, pa, a, pb, b in cands:
        if drop(a, b) or norm(a) in seen or norm(b) in seen:
            continue
        want_pair = n_pos < N_PARA_POS
        if not want_pair and len(triples) >= N_TRIPLES:
            break
        # the pair task shows (b, c): pick c close to b; the triples compare c with a
        neg = hard_negative(en, *((b, pb) if want_pair else (a, pa)), pool, index,
                            seen | {norm(a), norm(b)})
        if not neg or drop(neg[3]):
            continue
        _, en2, pc, c = neg
        seen.update((norm(a), norm(b), norm(c)))
        if want_pair:
            n_pos += 1
            pairs.append(({"sentence1": a, "sentence2": b, "label": 1}, [pa, pb]))
            pairs.append(({"sentence1": b, "sentence2": c, "label": 0}, [pb, pc]))
        else:
            triples.append(({"anchor": a, "positive": b, "negative": c}, [pa, pb, pc]))
    random.Random(1).shuffle(pairs)
    return pairs, triples


# --- English description tasks --------------------------------------------------------------
def read_apt_list(name):
    path = os.path.join(APT_LISTS, name)
    if not os.path.exists(path):
        raise SystemExit(f"missing {path}: run `apt-get -o Acquire::Languages=en update`")
    raw = open(path, "rb").read()
    text = subprocess.run(["lz4", "-dc"], input=raw, check=True, capture_output=True).stdout
    return path, hashlib.sha256(raw).hexdigest(), text.decode("utf-8", "replace")


def stanzas(text):
    for block in text.split("\n\n"):
        fields, last = {}, None
        for line in block.split("\n"):
            if line[:1] in (" ", "\t") and last:
                fields[last] += "\n" + line
            elif ":" in line:
                last, v = line.split(":", 1)
                fields[last] = v.strip()
        if fields:
            yield fields


def long_text(desc_en):
    """Long description of a Description-en field as one line of prose."""
    lines = desc_en.split("\n")[1:]
    paras, cur = [], []
    for ln in lines:
        s = ln.strip()
        if s == ".":
            paras.append(" ".join(cur))
            cur = []
        else:
            cur.append(s)
    paras.append(" ".join(cur))
    return unicodedata.normalize("NFC", " ".join(" ".join(p for p in paras if p).split()))


def descriptions(reserved, used):
    """Candidate English descriptions, one binary package per source package."""
    ppath, psha, ptext = read_apt_list(PACKAGES_LIST)
    tpath, tsha, ttext = read_apt_list(TRANSLATION_LIST)
    by_md5 = {}
    for f in stanzas(ttext):
        if "Description-en" in f and "Description-md5" in f:
            by_md5[f["Description-md5"]] = f["Description-en"]
    pkgs = [f for f in stanzas(ptext) if "Package" in f]
    bad_src = {f.get("Source", f["Package"]).split()[0] for f in pkgs
               if forbidden(f["Package"], reserved, used)}
    bad_md5 = {f.get("Description-md5") for f in pkgs if forbidden(f["Package"], reserved, used)}
    md5_count = defaultdict(int)
    for f in pkgs:
        md5_count[f.get("Description-md5")] += 1
    by_src = {}
    for f in sorted(pkgs, key=lambda f: f["Package"]):
        name, src = f["Package"], f.get("Source", f["Package"]).split()[0]
        md5 = f.get("Description-md5")
        if (forbidden(name, reserved, used) or src in bad_src or md5 in bad_md5
                or f.get("Section") not in APP_SECTIONS or md5 not in by_md5
                or md5_count[md5] > 1 or src in by_src):
            continue
        d = by_md5[md5]
        syn = " ".join(d.split("\n")[0].split())
        body = long_text(d)
        if not (3 <= len(syn.split()) <= 15 and 25 <= len(body.split()) <= 90):
            continue
        if not re.match(r"[A-Za-z0-9]", body) or "http" in body:
            continue
        by_src[src] = {"package": name, "version": f.get("Version", "?"),
                       "section": f["Section"], "synopsis": syn, "text": body}
    meta = {"Packages": (ppath, psha), "Translation-en": (tpath, tsha)}
    return [by_src[s] for s in sorted(by_src)], meta


def build_description_tasks(cands, drop):
    rng = random.Random(0)
    cands = list(cands)
    rng.shuffle(cands)
    seen_syn, seen_text, seen_head, clean = set(), set(), set(), []
    for c in cands:
        head = " ".join(words(c["text"])[:8])
        if (norm(c["synopsis"]) in seen_syn or norm(c["text"]) in seen_text or head in seen_head
                or drop(c["synopsis"], c["text"])):
            continue
        seen_syn.add(norm(c["synopsis"]))
        seen_text.add(norm(c["text"]))
        seen_head.add(head)
        clean.append(c)
    taken = set()
    # classification and clustering first (they need specific sections), then retrieval.
    cls_train, cls_test = [], []
    for sec in CLASS_SECTIONS:
        items = [c for c in clean if c["section"] == sec][:N_CLASS_TRAIN + N_CLASS_TEST]
        if len(items) < N_CLASS_TRAIN + N_CLASS_TEST:
            raise SystemExit(f"section {sec}: only {len(items)} descriptions")
        for i, c in enumerate(items):
            taken.add(c["package"])
            (cls_train if i < N_CLASS_TRAIN else cls_test).append(
                ({"text": c["text"], "label": sec}, [c]))
    clus = []
    for sec in CLUSTER_SECTIONS:
        items = [c for c in clean if c["section"] == sec and c["package"] not in taken]
        if len(items) < N_CLUSTER:
            raise SystemExit(f"section {sec}: only {len(items)} descriptions")
        for c in items[:N_CLUSTER]:
            taken.add(c["package"])
            clus.append(({"text": c["text"], "label": sec}, [c]))
    rest = [c for c in clean if c["package"] not in taken]
    queries = [({"query": c["synopsis"], "positive": [c["text"]]}, [c])
               for c in rest[:N_QUERIES]]
    corpus = [({"text": c["text"]}, [c]) for c in rest[N_QUERIES:N_QUERIES + N_DISTRACTORS]]
    for rows in (cls_train, cls_test, clus):
        rng.shuffle(rows)
    return {"train": cls_train, "test": cls_test}, clus, queries, corpus


# --- output ---------------------------------------------------------------------------------
def all_texts(row):
    for k, v in row.items():
        if isinstance(v, str) and k != "label":
            yield v
        elif isinstance(v, list):
            yield from v


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n")


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=os.path.join(ROOT, "data", "eval"))
    ap.add_argument("--work", default="/tmp/bg2vec-eval-build")
    args = ap.parse_args()

    reserved, used = check_forbidden_lists()
    train_keys = set()
    for p in TRAIN_FILES:
        train_keys.update(norm(l) for l in open(p, encoding="utf-8") if l.strip())
    dropped = defaultdict(int)

    def make_drop(task):
        def drop(*texts):
            if any(norm(t) in train_keys for t in texts):
                dropped[task] += 1
                return True
            return False
        return drop

    # Bulgarian catalogs
    debs = fetch_debs(args.work)
    versions, licences, catalogs = {}, {}, {}
    for pkg in PACKAGES:
        versions[pkg], catalogs[pkg], cr = read_deb(debs[pkg], pkg)
        licences[pkg] = licence_of(cr)
        if not catalogs[pkg]:
            raise SystemExit(f"{pkg} has no Bulgarian .mo catalog")
    by_msgid = collect_bg(catalogs)
    bitext = build_bitext(by_msgid, make_drop("debian-bitext-bul-eng"))
    pairs, triples = build_pairs_and_triples(by_msgid, make_drop("debian-paraphrase-bg"))

    # English descriptions
    cands, apt_meta = descriptions(reserved, used)
    cls, clus, queries, corpus = build_description_tasks(
        cands, make_drop("debian-descriptions-retrieval-en"))

    bg_src = "Debian 12 (bookworm) packages: "
    desc_src = ("Debian 12 (bookworm) main archive metadata: binary-amd64 Packages (Section) "
                "and i18n/Translation-en (Description-en) of the binary packages listed in "
                "data/eval/SOURCE.md")
    desc_lic = ("Package descriptions from the Debian archive (DFSG-free `main` packages); "
                "each is part of its package and under that package's licence")
    tasks = [
        ("debian-bitext-bul-eng", "bitext_mining", ["bul-Cyrl", "eng-Latn"],
         "Bulgarian UI sentence (msgstr) and its English source (msgid) from gettext "
         "catalogs of Debian desktop applications; find the translation of each sentence.",
         {"test": bitext}),
        ("debian-paraphrase-bg", "pair_classification", ["bul-Cyrl"],
         "Label 1: two different human Bulgarian translations (from two packages) of the "
         "same English UI string. Label 0: a translation of another English string that "
         "shares many Bulgarian words (hard negative).", {"test": pairs}),
        ("debian-hard-triples-bg", "hard_triples", ["bul-Cyrl"],
         "Anchor and positive: two different Bulgarian translations of one English UI "
         "string from two packages; negative: the translation of a different string that "
         "shares most words with the anchor.", {"test": triples}),
        ("debian-descriptions-retrieval-en", "retrieval", ["eng-Latn"],
         "Query: a Debian package's one-line synopsis; positive: its long description; "
         "corpus: all positives plus long descriptions of other packages.",
         {"test": queries, "corpus": corpus}),
        ("debian-sections-classification-en", "classification", ["eng-Latn"],
         "Debian package long descriptions labelled by archive Section: "
         + ", ".join(CLASS_SECTIONS) + ".", cls),
        ("debian-sections-clustering-en", "clustering", ["eng-Latn"],
         "Debian package long descriptions to cluster by archive Section: "
         + ", ".join(CLUSTER_SECTIONS) + ".", {"test": clus}),
    ]

    # --- separation checks (refuse to write if violated) ---
    used_pkgs = defaultdict(set)       # task -> Bulgarian packages
    desc_pkgs = defaultdict(dict)      # task -> {package: version}
    for name, typ, _, _, files in tasks:
        for rows in files.values():
            for row, src in rows:
                for s in src:
                    if isinstance(s, dict):
                        desc_pkgs[name][s["package"]] = s["version"]
                    else:
                        used_pkgs[name].add(s)
                for t in all_texts(row):
                    if not t.strip() or norm(t) in train_keys:
                        raise SystemExit(f"{name}: text equals a training line: {t!r}")
    for name in list(used_pkgs) + list(desc_pkgs):
        for p in set(used_pkgs.get(name, ())) | set(desc_pkgs.get(name, {})):
            if forbidden(p, reserved, used) or forbidden(p):
                raise SystemExit(f"{name}: uses forbidden package {p}")
    for name, _, _, _, files in tasks:
        for split, rows in files.items():
            keys = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r, _ in rows]
            if len(set(keys)) != len(keys):
                raise SystemExit(f"{name}/{split}: duplicate rows")

    # --- write ---
    out = args.output
    if os.path.isdir(out):
        for d in glob.glob(os.path.join(out, "*")):
            if os.path.isdir(d) and os.path.exists(os.path.join(d, "task.json")):
                shutil.rmtree(d)
    os.makedirs(out, exist_ok=True)
    summary = []
    for name, typ, langs, desc, files in tasks:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        if name in used_pkgs:
            source = bg_src + ", ".join(f"{p} ({versions[p]})" for p in sorted(used_pkgs[name]))
            lic = ("Translations are distributed with their packages under the packages' "
                   "licences: " + "; ".join(sorted({licences[p].split(" (")[0]
                                                     for p in used_pkgs[name]}))
                   + " (per package in data/eval/SOURCE.md)")
        else:
            source, lic = desc_src, desc_lic
        meta = {"name": name, "type": typ, "languages": langs, "description": desc,
                "source": source, "license": lic}
        with open(os.path.join(d, "task.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=2)
            f.write("\n")
        counts = {}
        for split, rows in files.items():
            write_jsonl(os.path.join(d, split + ".jsonl"), [r for r, _ in rows])
            counts[split] = len(rows)
        summary.append((name, typ, langs, counts))

    write_source_md(out, tasks, summary, used_pkgs, desc_pkgs, versions, licences, apt_meta,
                    dropped, reserved, used)
    print(open(os.path.join(out, "SOURCE.md"), encoding="utf-8").read().split(
        "## Packages (machine-readable)")[0])


def write_source_md(out, tasks, summary, used_pkgs, desc_pkgs, versions, licences, apt_meta,
                    dropped, reserved, used):
    L = []
    add = L.append
    add("# Evaluation sets: where they come from\n")
    add("Small offline evaluation sets, rebuilt by `scripts/build_eval_sets.py` (stdlib only) "
        "from Debian 12 (bookworm). All text was written by people (upstream developers, "
        "volunteer translators, Debian maintainers); nothing was generated or translated by "
        "us. Rows are chosen deterministically (sorted input, `random.Random(0)`).\n")
    add("## Tasks\n")
    add("| task | type | languages | rows |")
    add("| --- | --- | --- | --- |")
    for name, typ, langs, counts in summary:
        add(f"| `{name}` | {typ} | {', '.join(langs)} | "
            + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " |")
    add("")
    add("### How they are built\n")
    add("- **Bulgarian catalogs.** Every `usr/share/**/locale/bg/LC_MESSAGES/*.mo` of the "
        f"{len(PACKAGES)} packages below is read with `gettext.GNUTranslations` (msgctxt "
        "dropped, singular plural form only). Access keys (`_`, `~`, `&`) are removed; a "
        "string is dropped (not patched) if it has several lines, markup, placeholders or "
        "symbols (`% $ \\ { } < > | @ # = [ ] ^ \\` & * _ ~`), an ellipsis, a URL, a file "
        "name or a command-line option. English: 2-40 words, >= 95% Latin letters, starts "
        "upper-case. Bulgarian: 2-50 words, >= 85% Cyrillic letters.")
    add(f"- **debian-bitext-bul-eng.** English msgids with >= 4 words that end like a "
        "sentence (`.`, `!`, `?`), paired with one Bulgarian translation (the first package "
        "in name order); Bulgarian >= 3 words, length ratio 0.5-2.5. Shuffled, at most "
        f"{BITEXT_PER_PKG} rows per package, no repeated sentence on either side "
        "(normalised).")
    add("- **debian-paraphrase-bg / debian-hard-triples-bg.** Candidates: an English msgid "
        "(>= 2 words) translated by two packages with different Bulgarian wording (different "
        "normalised text, word Jaccard <= 0.8; the least similar pair is kept). Hard negative: "
        "among the translations of *other* msgids in the same package (two different msgids of one application almost always name different things), the one with the highest Bulgarian word "
        "overlap with the sentence it is paired with (b in the pair task, the anchor a in the triples) (Jaccard 0.2-0.9 over words of >= 4 letters) whose English msgid differs from the "
        "anchor's in content words both ways (after removing stop words and mapping a small "
        "list of UI synonyms such as show/display, folder/directory, so that negatives are "
        "not paraphrases). The shuffled candidates fill the paraphrase set first "
        f"({N_PARA_POS} positives `(a, b, 1)` and {N_PARA_POS} negatives `(b, c, 0)`), then "
        "the triples `(a, b, c)`. No Bulgarian sentence is used twice across the two sets.")
    add("- **Caveats (Bulgarian pairs).** The texts are short UI strings (menu items, settings "
        "summaries), not prose. The negative rule is lexical, so a few label-0 rows are "
        "near-paraphrases (seen in a manual audit of the English msgids: e.g. a GSettings "
        "summary and description of one key, 'Whether bold text should use the same color as "
        "normal text' / 'If true, boldface text will be rendered using the same color as "
        "normal text.'), and some positives differ only by a word form. Translations of one "
        "msgid in sister projects (GNOME/MATE/Xfce forks) are sometimes near-identical.")
    add("- **English descriptions.** From the bookworm `main` Packages and Translation-en "
        "lists: packages in application sections (" + ", ".join(APP_SECTIONS) + "), one "
        "binary package per source package (first by name), description not shared with "
        "another package, synopsis 3-15 words, long description 25-90 words (paragraphs "
        "joined to one line), no URL. Shuffled; near-duplicates (same synopsis, same text, "
        "same first 8 words) are dropped. Classification takes "
        f"{N_CLASS_TRAIN} train + {N_CLASS_TEST} test per section, clustering "
        f"{N_CLUSTER} per section, and retrieval uses the remaining packages: "
        f"{N_QUERIES} queries (synopsis -> long description) and {N_DISTRACTORS} distractor "
        "documents in `corpus.jsonl`. The three tasks share no package.")
    add("")
    add("## Separation from the training corpus\n")
    add("Forbidden packages, parsed from `data/bg/SOURCE.md` at build time and compared with "
        "the constants in the script (the build stops if they differ or if any package used "
        "here is on either list):\n")
    add("- reserved for outside evaluation: " + ", ".join(f"`{r}`" for r in sorted(reserved)))
    add("- used for train/validation/eval_pairs: " + ", ".join(sorted(used)))
    add("")
    add("Results of the checks:\n")
    add("- No package used here is on either list (the Bulgarian catalogs above, and the "
        "package of every description). Descriptions of forbidden packages, of every binary "
        "package built from the same source as a forbidden package, and of packages sharing "
        "a description with one are excluded.")
    n_drop = {t: dropped.get(t, 0) for t in ("debian-bitext-bul-eng", "debian-paraphrase-bg",
                                             "debian-descriptions-retrieval-en")}
    add("- Texts equal (after NFC, lower-casing and removing everything but letters and "
        "digits) to a line of `data/bg/train.txt` or `data/bg/validation.txt`: candidate rows "
        f"dropped: bitext {n_drop['debian-bitext-bul-eng']}, paraphrase/triples "
        f"{n_drop['debian-paraphrase-bg']}, descriptions "
        f"{n_drop['debian-descriptions-retrieval-en']}. No written text equals a training "
        "line (verified again before writing).")
    add("")
    add("## Files and sha256\n")
    add("```")
    for name, _, _, _, files in tasks:
        for fn in ["task.json"] + [s + ".jsonl" for s in files]:
            p = os.path.join(out, name, fn)
            add(f"{sha256(p)}  {name}/{fn}")
    add("```\n")
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "*", "*")))
    add(f"Total size of the task folders: {total:,} bytes.\n")
    add("## Bulgarian catalog packages\n")
    add("Licence: from `usr/share/doc/PKG/copyright`: in DEP-5 files the `License:` of the last "
        "`Files:` paragraph that covers `po/bg.po` (`Files: *` included), else the most "
        "frequent `License:` field; in free-form files the licence named in the text. The translations "
        "are distributed as part of each package, under its licence. `tasks`: b = bitext, "
        "p = paraphrase, t = triples, - = read but no row picked.\n")
    add("| package | version | licence | tasks |")
    add("| --- | --- | --- | --- |")
    short = {"debian-bitext-bul-eng": "b", "debian-paraphrase-bg": "p",
             "debian-hard-triples-bg": "t"}
    for p in PACKAGES:
        ts = "".join(v for k, v in short.items() if p in used_pkgs.get(k, ())) or "-"
        add(f"| {p} | {versions[p]} | {licences[p].replace('|', '/')} | {ts} |")
    add("")
    add("## Archive lists\n")
    for k, (path, sha) in apt_meta.items():
        add(f"- {k}: `{os.path.basename(path)}` sha256 `{sha}`")
    add("")
    add("## Packages (machine-readable)\n")
    add("Every package whose text is in a task, one per line: `task package version`.\n")
    add("```text")
    for name, _, _, _, _ in tasks:
        for p in sorted(used_pkgs.get(name, ())):
            add(f"{name} {p} {versions[p]}")
        for p, v in sorted(desc_pkgs.get(name, {}).items()):
            add(f"{name} {p} {v}")
    add("```\n")
    add("## Rebuild\n")
    add("```bash\napt-get -o Acquire::Languages=en update\n"
        "python3 scripts/build_eval_sets.py --output data/eval --work /tmp/bg2vec-eval-build\n"
        "```\n")
    add("The script downloads missing .debs with `apt-get download` into `WORK/debs`. Files "
        "are identical for the same .debs and apt lists; a Debian point release can change "
        "versions and so rows.")
    with open(os.path.join(out, "SOURCE.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
