"""The demo's numbers agree in the three places a newcomer reads them (issue 26): the README's demo
table, docs/demo.md and the committed outputs of notebooks/queries.ipynb (executed against the demo
study). Each is parsed: the per-classifier rows of the result table (every number of a row), the
Fig. 1 checks of the scan group, and the per-scan rows docs/demo.md shows. A rerun of the demo that
changes a number must update all three together."""
import json
import re

from tests.helpers import ROOT

CLASSIFIER_ROW = re.compile(r"^(?P<name>\S.*?\([^()]+, [^()]+\))\s+(?P<rest>\d+\s+\d+\.\d+ \+- \d+\.\d+\s.*)$")
SCAN_ROW = re.compile(r"^\s*(?P<scan>\d+-\d+-\d+)\s+(?P<rest>\d+\s+\d+\s+\d+\s+\S.*)$")
CHECK = re.compile(r"r\(S_model, S_oracle\) = (?P<model>-?\d\.\d+)\s+r\(S_data, S_oracle\) = (?P<data>-?\d\.\d+)")
EQ45 = re.compile(r"s\.d\. of Eq\. 4 \(across scans\) = (?P<eq4>\S+)\s+s\.d\. of Eq\. 5 \(across repeats\) = "
                  r"(?P<eq5>\d\.\d+)")


def parse(text: str) -> dict:
    """{'classifiers': {name: tokens}, 'scans': {scan: tokens}, 'checks': [(r_model, r_data, eq4, eq5)]}"""
    out = {"classifiers": {}, "scans": {}, "checks": []}
    for line in text.splitlines():
        m = CLASSIFIER_ROW.match(line)
        if m:
            out["classifiers"][m["name"].strip()] = m["rest"].split()
            continue
        m = SCAN_ROW.match(line)
        if m:
            out["scans"][m["scan"]] = m["rest"].split()
        m = CHECK.search(line)
        if m:
            out["checks"].append([m["model"], m["data"]])
        m = EQ45.search(line)
        if m and out["checks"]:
            out["checks"][-1] += [m["eq4"], m["eq5"]]
    return out


def text_blocks(path) -> str:
    """The ```text blocks of a markdown file, joined."""
    blocks = re.findall(r"^```text\n(.*?)^```", path.read_text(), flags=re.M | re.S)
    return "\n".join(blocks)


def notebook_table() -> str:
    """The printed output of the notebook's cell under 'The demo's result table'."""
    nb = json.loads((ROOT / "notebooks" / "queries.ipynb").read_text())
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and "The demo's result table" in "".join(cell["source"]):
            code = next(c for c in cells[i + 1:] if c["cell_type"] == "code")
            return "".join("".join(o.get("text", "")) for o in code["outputs"] if o["output_type"] == "stream")
    raise AssertionError("the notebook has no section 'The demo's result table'")


def test_the_notebook_the_readme_and_docs_demo_show_the_same_numbers():
    notebook = parse(notebook_table())
    readme = parse(text_blocks(ROOT / "README.md"))
    demo = parse(text_blocks(ROOT / "docs" / "demo.md"))
    assert len(notebook["classifiers"]) >= 4 and notebook["checks"], notebook
    assert "92000001-1-1" in notebook["scans"], "the committed outputs are not from the demo profile"
    assert readme["classifiers"] == notebook["classifiers"]
    assert demo["classifiers"] == notebook["classifiers"]
    assert readme["checks"] == notebook["checks"] and demo["checks"] == notebook["checks"]
    assert demo["scans"] and all(notebook["scans"].get(s) == v for s, v in demo["scans"].items()), demo["scans"]


def test_the_parser_reads_a_result_table():
    text = """
  92000001-1-1     1000    3400     100       0.553          0.972   0.405     0.564          0.755       83
  r(S_model, S_oracle) = 0.714   r(S_data, S_oracle) = 0.383   (paper, Fig. 1D: 0.73 and 0.39)
  s.d. of Eq. 4 (across scans) = 0.061   s.d. of Eq. 5 (across repeats) = 0.242   (paper, Fig. 1C: Eq. 4 narrower)
classifier                           seeds   clean accuracy acc. at sd 0.1  median L2
Neural (model) (demo, offline-photos)     2     0.566 +- 0.005          0.533     0.0010   0.3134      13,9       31
None (demo, offline-photos)              2     0.645 +- 0.001          0.471     0.1614   -          -       17
"""
    parsed = parse(text)
    assert parsed["classifiers"] == {"Neural (model) (demo, offline-photos)": "2 0.566 +- 0.005 0.533 0.0010 0.3134 "
                                                                            "13,9 31".split(),
                                     "None (demo, offline-photos)": "2 0.645 +- 0.001 0.471 0.1614 - - 17".split()}
    assert parsed["scans"]["92000001-1-1"][0] == "1000"
    assert parsed["checks"] == [["0.714", "0.383", "0.061", "0.242"]]
