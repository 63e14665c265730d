"""Genotype interchange: DARTS notation, JSON, the shipped genotypes, and located errors.

Set MSRDSL_UPDATE_SNAPSHOTS=1 to (re)write genotypes/*.genotype from the DARTS notation in
tests/data/published-genotypes.txt and the metadata below; inspect the diff before committing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from msrdsl.errors import GenotypeError, Location
from msrdsl.genotype import CellGenotype, Edge, Genotype, Node
from msrdsl.genotype_io import (from_darts, from_json, genotype_names, genotypes_dir,
                                load_genotype, read_darts_genotypes, to_darts, to_json,
                                validate_genotype)
from strategies_genotype import DARTS_OPS, genotypes

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("MSRDSL_UPDATE_SNAPSHOTS") == "1"
# DARTS name -> (file name, header comment lines, source). Parameter counts are the papers',
# for the evaluation networks, auxiliary tower excluded.
PUBLISHED = {
    "DARTS_V1": ("darts_v1", (
        '# DARTS, first order: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search",',
        "# ICLR 2019. From quark0/darts cnn/genotypes.py, DARTS_V1.",
        "# Paper: CIFAR-10 3.3 M params (20 cells, 36 channels, auxiliary tower excluded).",
    ), "quark0/darts cnn/genotypes.py DARTS_V1 (DARTS first order, Liu et al. 2019); "
       "paper: CIFAR-10 3.3 M params"),
    "DARTS_V2": ("darts_v2", (
        '# DARTS, second order: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search",',
        "# ICLR 2019. From quark0/darts cnn/genotypes.py, DARTS_V2.",
        "# Paper: CIFAR-10 3.3 M params (20 cells, 36 channels); ImageNet 4.7 M params (14 cells,",
        "# 48 channels); auxiliary tower excluded.",
    ), "quark0/darts cnn/genotypes.py DARTS_V2 (DARTS second order, Liu et al. 2019); "
       "paper: CIFAR-10 3.3 M params, ImageNet 4.7 M params"),
    "MSRDARTS": ("msr_darts", (
        '# MSR-DARTS: Machida, Uto, Shinoda, Suzuki, "MSR-DARTS: Minimum Stable Rank of',
        '# Differentiable Architecture Search". From mtaecchhi/msrdarts genotypes.py, MSRDARTS.',
        "# Paper: CIFAR-10 4.0 M params (20 cells, 36 channels), 1.63 M in the 8-cell toy network;",
        "# ImageNet 5.6 M params (14 cells, 48 channels); auxiliary tower excluded.",
    ), "mtaecchhi/msrdarts genotypes.py MSRDARTS (MSR-DARTS, Machida et al.); "
       "paper: CIFAR-10 4.0 M params, 8-cell toy 1.63 M, ImageNet 5.6 M"),
    "PC_DARTS_cifar": ("pc_darts_cifar", (
        '# PC-DARTS, searched on CIFAR-10: Xu et al., "PC-DARTS: Partial Channel Connections for',
        '# Memory-Efficient Architecture Search", ICLR 2020. From yuhuixu1993/PC-DARTS',
        "# genotypes.py, PC_DARTS_cifar.",
        "# Paper: CIFAR-10 3.6 M params (20 cells, 36 channels, auxiliary tower excluded).",
    ), "yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_cifar (PC-DARTS, Xu et al. 2020); "
       "paper: CIFAR-10 3.6 M params"),
    "PC_DARTS_image": ("pc_darts_imagenet", (
        '# PC-DARTS, searched on ImageNet: Xu et al., "PC-DARTS: Partial Channel Connections for',
        '# Memory-Efficient Architecture Search", ICLR 2020. From yuhuixu1993/PC-DARTS',
        "# genotypes.py, PC_DARTS_image.",
        "# Paper: ImageNet 5.3 M params (14 cells, 48 channels, auxiliary tower excluded).",
    ), "yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_image (PC-DARTS, Xu et al. 2020); "
       "paper: ImageNet 5.3 M params"),
    "PDARTS": ("pdarts", (
        '# P-DARTS: Chen, Xie, Wu, Tian, "Progressive Differentiable Architecture Search: Bridging',
        '# the Depth Gap between Search and Evaluation", ICCV 2019. From chenxin061/pdarts',
        "# genotypes.py, PDARTS.",
        "# Paper: CIFAR-10 3.4 M params (20 cells, 36 channels); ImageNet 4.9 M params (14 cells,",
        "# 48 channels); auxiliary tower excluded.",
    ), "chenxin061/pdarts genotypes.py PDARTS (P-DARTS, Chen et al. 2019); "
       "paper: CIFAR-10 3.4 M params, ImageNet 4.9 M params"),
    "DARTS_PT_S5_0": ("darts_pt_s5_0", (
        "# DARTS-PT (perturbation-based selection): Wang, Cheng, Chen, Tang, Hsieh, \"Rethinking",
        '# Architecture Selection in Differentiable NAS", ICLR 2021. From ruocwang/darts-pt',
        "# sota/cnn/genotypes.py, DARTS_PT_S5_0.",
        "# No paper figure for this genotype; the repository's comment beside it says 2.85 M params.",
    ), "ruocwang/darts-pt sota/cnn/genotypes.py DARTS_PT_S5_0 (DARTS-PT, Wang et al. 2021); "
       "repository comment: 2.85 M params"),
}


def published() -> dict[str, Genotype]:
    """The published genotypes as their authors' repositories print them, with our names."""
    found = read_darts_genotypes((DATA / "published-genotypes.txt").read_text(),
                                 "published-genotypes.txt", DARTS_OPS)
    return {PUBLISHED[k][0]: evolve(g, name=PUBLISHED[k][0], source=PUBLISHED[k][2])
            for k, g in found.items()}


# ---------------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=100, deadline=None)
@given(genotypes())
def test_darts_notation_round_trip(g: Genotype) -> None:
    back = from_darts(to_darts(g), inputs=g.normal.inputs)
    assert back == evolve(g, source=None)  # DARTS notation has no place for the source


@settings(max_examples=100, deadline=None)
@given(genotypes(inputs=st.just(2), pairs=True))
def test_pairs_are_written_as_darts_writes_them(g: Genotype) -> None:
    text = to_darts(g)
    assert text.startswith(f"{g.name} = Genotype(normal=[(")
    pairs = re.findall(r"\('[A-Za-z0-9_]+', \d+\)", text)
    assert len(pairs) == sum(len(n.edges) for c in (g.normal, g.reduce) for n in c.nodes)


@settings(max_examples=100, deadline=None)
@given(genotypes())
def test_json_round_trip(g: Genotype) -> None:
    assert from_json(json.loads(json.dumps(to_json(g)))) == g


@settings(max_examples=100, deadline=None)
@given(genotypes())
def test_generated_genotypes_are_valid(g: Genotype) -> None:
    assert validate_genotype(g) is g


# ---------------------------------------------------------------------------------------------
# Published genotypes


def test_every_published_genotype_parses() -> None:
    found = published()
    assert sorted(found) == sorted(v[0] for v in PUBLISHED.values())
    msr = found["msr_darts"]
    assert [(e.op, e.input) for e in msr.normal.nodes[3].edges] == [("sep_conv_5x5", 1),
                                                                   ("dil_conv_5x5", 2)]
    assert msr.reduce.concat == (2, 3, 4, 5)


def test_published_data_file_matches_shared_reference() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published-genotypes.txt"
    if not shared.is_file():
        pytest.skip("../shared is not beside the repository")
    ours = read_darts_genotypes((DATA / "published-genotypes.txt").read_text())
    assert read_darts_genotypes(shared.read_text()) == ours


@pytest.mark.parametrize("darts_name", sorted(PUBLISHED))
def test_shipped_genotype_file(darts_name: str) -> None:
    from msrdsl.lang import format_genotype, parse_genotype_file

    name, header, _ = PUBLISHED[darts_name]
    expected = published()[name]
    path = genotypes_dir() / f"{name}.genotype"
    text = format_genotype(expected, header=header)
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text
    assert parse_genotype_file(path) == expected
    assert load_genotype(name) == expected
    assert f'source "{expected.source}"' in text


def test_shipped_names() -> None:
    assert set(genotype_names()) >= {v[0] for v in PUBLISHED.values()}


# ---------------------------------------------------------------------------------------------
# Located errors in DARTS notation

GOOD_REDUCE = "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2]"

MALFORMED = {
    "unknown op": (
        f"G = Genotype(normal=[('sep_conv_3x4', 1), ('sep_conv_3x3', 0)], normal_concat=[2], "
        f"{GOOD_REDUCE})",
        "<darts>:1:23: error: normal cell, node 2: unknown operator 'sep_conv_3x4'\n"
        "  G = Genotype(normal=[('sep_conv_3x4', 1), ('sep_conv_3x3', 0)], normal_concat=[2], "
        f"{GOOD_REDUCE})\n"
        "                        ^~~~~~~~~~~~~~\n"
        "  hint: did you mean 'sep_conv_3x3'?"),
    "later node": (
        "Genotype(\n"
        "  normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 4), ('sep_conv_3x3', 2)],\n"
        f"  normal_concat=[2, 3], {GOOD_REDUCE})",
        "<darts>:2:70: error: normal cell, node 3: input 4 is a later node\n"
        "    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 4), ('sep_conv_3x3', 2)],\n"
        "                                                                       ^\n"
        "  hint: node 3 can take input from nodes 0..2"),
    "itself": (
        f"Genotype(normal=[('sep_conv_3x3', 2), ('sep_conv_3x3', 0)], normal_concat=[2], {GOOD_REDUCE})",
        "<darts>:1:35: error: normal cell, node 2: takes input from itself\n"
        f"  Genotype(normal=[('sep_conv_3x3', 2), ('sep_conv_3x3', 0)], normal_concat=[2], {GOOD_REDUCE})\n"
        "                                    ^\n"
        "  hint: node 2 can take input from nodes 0..1"),
    "odd edge count": (
        f"Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
        f"normal_concat=[2], {GOOD_REDUCE})",
        "<darts>:1:60: error: 'normal' lists 3 edges: the (op, input) form needs two per node, "
        "so the last node has only this one\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
        f"normal_concat=[2], {GOOD_REDUCE})\n"
        "                                                             ^\n"
        "  hint: add its second edge, or write FairDARTS (op, target, input) triples for nodes "
        "with other edge counts"),
    "bad concat": (
        f"Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2, 6], "
        f"{GOOD_REDUCE})",
        "<darts>:1:79: error: normal cell: concat names node 6, but the cell's nodes are 0..2\n"
        f"  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2, 6], "
        f"{GOOD_REDUCE})\n"
        "                                                                                ^"),
    "unbalanced": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), normal_concat=[2])",
        "<darts>:1:60: error: expected an edge like ('sep_conv_3x3', 0), found 'normal_concat'\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), normal_concat=[2])\n"
        "                                                             ^~~~~~~~~~~~~\n"
        "  hint: is the '[' at line 1, column 17 missing its ']'?"),
    "mismatched closer": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)), normal_concat=[2])",
        "<darts>:1:58: error: expected ']' to close the '[' at line 1, column 17, found ')'\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)), normal_concat=[2])\n"
        "                                                           ^"),
    "never closed": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2]",
        "<darts>:1:9: error: '(' is never closed\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2]\n"
        "          ^\n"
        "  hint: add ')' to close it"),
    "not a Genotype": (
        "Foo(normal=[])",
        "<darts>:1:1: error: expected a DARTS genotype 'Genotype(normal=..., ...)', found 'Foo'\n"
        "  Foo(normal=[])\n"
        "  ^~~\n"
        "  hint: the text is read as data, never run: only Genotype(...) with lists of (op, "
        "input) edges and range(...) or lists for concat"),
    "injection at the top": (
        "__import__('os').system('echo owned')",
        "<darts>:1:1: error: expected a DARTS genotype 'Genotype(normal=..., ...)', found "
        "'__import__'\n"
        "  __import__('os').system('echo owned')\n"
        "  ^~~~~~~~~~\n"
        "  hint: the text is read as data, never run: only Genotype(...) with lists of (op, "
        "input) edges and range(...) or lists for concat"),
    "injection inside": (
        "Genotype(normal=__import__('os').listdir('.'), normal_concat=[2])",
        "<darts>:1:17: error: expected a list of (op, input) edges for 'normal', found "
        "'__import__'\n"
        "  Genotype(normal=__import__('os').listdir('.'), normal_concat=[2])\n"
        "                  ^~~~~~~~~~"),
    "unknown field": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concatt=[2])",
        "<darts>:1:61: error: unknown Genotype field 'normal_concatt'\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concatt=[2])\n"
        "                                                              ^~~~~~~~~~~~~~\n"
        "  hint: did you mean 'normal_concat'?"),
    "missing field": (
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2])",
        "<darts>:1:78: error: Genotype(...) is missing 'reduce='\n"
        "  Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], normal_concat=[2])\n"
        "                                                                               ^\n"
        "  hint: a DARTS genotype gives normal, normal_concat, reduce and reduce_concat"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_darts_is_located(case: str) -> None:
    text, expected = MALFORMED[case]
    with pytest.raises(GenotypeError) as info:
        from_darts(text, known_ops=DARTS_OPS)
    assert info.value.render() == expected
    assert info.value.loc is not None and info.value.loc.line >= 1


def test_nothing_is_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    for text in (f"open({str(marker)!r}, 'w')",
                 f"Genotype(normal=[(open({str(marker)!r}, 'w'), 0)])",
                 f"X = Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], "
                 f"reduce=[('a', 0), ('b', 1)], reduce_concat=[open({str(marker)!r}, 'w')])"):
        with pytest.raises(GenotypeError):
            from_darts(text)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# DARTS notation: forms and files


def test_fairdarts_triples_are_op_target_input() -> None:
    text = ("SPARSE = Genotype(normal=[('sep_conv_3x3', 2, 0), ('dil_conv_3x3', 2, 1), "
            "('skip_connect', 2, 0), ('max_pool_3x3', 3, 2), ('sep_conv_5x5', 4, 3), "
            "('sep_conv_5x5', 4, 1)], normal_concat=range(2, 5), "
            "reduce=[('max_pool_3x3', 2, 1), ('avg_pool_3x3', 3, 0), ('skip_connect', 3, 2)], "
            "reduce_concat=range(2, 4))")
    g = from_darts(text, known_ops=DARTS_OPS)
    assert g.name == "SPARSE"
    assert [[(e.op, e.input) for e in n.edges] for n in g.normal.nodes] == [
        [("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("skip_connect", 0)],
        [("max_pool_3x3", 2)],
        [("sep_conv_5x5", 3), ("sep_conv_5x5", 1)],
    ]
    assert g.normal.concat == (2, 3, 4)
    assert to_darts(g) == text  # not two edges per node: written back as triples


def test_fairdarts_gap_and_input_target_are_errors() -> None:
    gap = ("Genotype(normal=[('sep_conv_3x3', 2, 0), ('max_pool_3x3', 4, 0)], "
           "normal_concat=range(2, 6), reduce=[('skip_connect', 2, 0)], reduce_concat=[2])")
    with pytest.raises(GenotypeError, match="node 3 has no edges, but node 4 does"):
        from_darts(gap)
    swapped = ("Genotype(normal=[('sep_conv_3x3', 0, 2)], normal_concat=[2], "
               "reduce=[('skip_connect', 2, 0)], reduce_concat=[2])")
    with pytest.raises(GenotypeError, match="edge target 0 is an input node"):
        from_darts(swapped)
    mixed = ("Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
             "reduce=[('skip_connect', 2, 0)], reduce_concat=[2])")
    with pytest.raises(GenotypeError, match="mixes forms"):
        from_darts(mixed)


def test_concat_forms() -> None:
    base = "Genotype(normal=[('a', 0), ('b', 1)], normal_concat={}, reduce=[('a', 0), ('b', 1)], reduce_concat=[2])"
    assert from_darts(base.format("range(2, 3)")).normal.concat == (2,)
    assert from_darts(base.format("[2,]")).normal.concat == (2,)
    assert from_darts(base.format("range(3)")).normal.concat == (0, 1, 2)
    with pytest.raises(GenotypeError, match="concatenates no nodes"):
        from_darts(base.format("range(2, 2)"))
    with pytest.raises(GenotypeError, match="concat names node 2 twice"):
        from_darts(base.format("[2, 2]"))


def test_python_file_with_several_genotypes() -> None:
    text = '''"""Genotypes, as a search repository keeps them."""
from collections import namedtuple

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
PRIMITIVES = [
    'none',  # a comment with a quote: don't
    'skip_connect',
]

# pairs over several lines, with a trailing comma
ONE = Genotype(
    normal=[('skip_connect', 0), ('skip_connect', 1),],
    normal_concat=range(2, 3),
    reduce=[('skip_connect', 1), ('skip_connect', 0)],
    reduce_concat=[2],
)
TWO = Genotype(normal=[('none', 1), ('none', 0)], normal_concat=[2],
               reduce=[('none', 0), ('none', 1)], reduce_concat=[2])
DARTS = ONE
'''
    found = read_darts_genotypes(text, "g.py", DARTS_OPS)
    assert list(found) == ["ONE", "TWO", "DARTS"]
    assert found["DARTS"] == evolve(found["ONE"], name="DARTS")
    assert found["ONE"].normal.loc is not None and found["ONE"].normal.loc.line == 12


def test_edge_locations_are_kept() -> None:
    text = ("X = Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2],\n"
            "             reduce=[('a', 0), ('b', 1)], reduce_concat=[2])")
    g = from_darts(text, "x.py")
    edge = g.reduce.nodes[0].edges[1]
    col = text.splitlines()[1].index("('b', 1)") + 1
    assert (edge.loc.path, edge.loc.line, edge.loc.col, edge.loc.end_col) == ("x.py", 2, col, col + 8)
    assert g.reduce.nodes[0].loc.col == col - 10 and g.loc.line == 1 and g.loc.end_line == 2


def test_to_darts_rejects_what_it_cannot_write() -> None:
    g = published()["msr_darts"]
    with pytest.raises(GenotypeError, match="not an identifier"):
        to_darts(evolve(g, name="msr darts"))


# ---------------------------------------------------------------------------------------------
# JSON


def _json_error(obj: object) -> str:
    with pytest.raises(GenotypeError) as info:
        from_json(obj, "g.json", known_ops=DARTS_OPS)
    return info.value.render()


def test_json_errors_name_their_path() -> None:
    good = to_json(published()["msr_darts"])
    assert _json_error([]) == "g.json: error: expected an object, found a list"
    assert _json_error({**good, "nmae": "x"}) == (
        "g.json: error: genotype: unknown key 'nmae'\n  hint: did you mean 'name'?")
    no_reduce = {k: v for k, v in good.items() if k != "reduce"}
    assert _json_error(no_reduce) == "g.json: error: genotype: missing key 'reduce'"
    bad = json.loads(json.dumps(good))
    bad["normal"]["nodes"][1][0]["input"] = "2"
    assert _json_error(bad) == (
        "g.json: error: normal.nodes[1][0].input: expected an integer, found a string")
    bad["normal"]["nodes"][1][0]["input"] = 4
    assert _json_error(bad) == (
        "g.json: error: normal.nodes[1][0].input: normal cell, node 3: input 4 is a later node\n"
        "  hint: node 3 can take input from nodes 0..2")
    bad = json.loads(json.dumps(good))
    bad["reduce"]["nodes"][0][1]["op"] = "dil_conv_3x4"
    assert _json_error(bad) == (
        "g.json: error: reduce.nodes[0][1].op: reduce cell, node 2: unknown operator "
        "'dil_conv_3x4'\n  hint: did you mean 'dil_conv_3x3'?")
    bad = json.loads(json.dumps(good))
    bad["reduce"]["concat"] = [2, 3, True]
    assert _json_error(bad) == (
        "g.json: error: reduce.concat[2]: expected an integer, found a boolean")


def test_json_shape() -> None:
    obj = to_json(published()["msr_darts"])
    assert obj["normal"]["nodes"][0] == [{"op": "sep_conv_3x3", "input": 1},
                                         {"op": "sep_conv_3x3", "input": 0}]
    assert obj["normal"]["inputs"] == 2 and obj["normal"]["concat"] == [2, 3, 4, 5]
    assert obj["source"].startswith("mtaecchhi/msrdarts")


# ---------------------------------------------------------------------------------------------
# Loading and validation


def test_load_json_py_and_selector(tmp_path: Path) -> None:
    g = published()["pdarts"]
    (tmp_path / "g.json").write_text(json.dumps(to_json(g)))
    assert load_genotype(tmp_path / "g.json") == g
    (tmp_path / "one.py").write_text(to_darts(g) + "\n")
    assert load_genotype(str(tmp_path / "one.py")) == evolve(g, source=None)
    (tmp_path / "bare.txt").write_text(to_darts(g, assign=False))
    assert load_genotype(tmp_path / "bare.txt").name == "bare"
    many = tmp_path / "many.txt"
    many.write_text((DATA / "published-genotypes.txt").read_text())
    assert load_genotype(f"{many}:PDARTS") == evolve(g, name="PDARTS", source=None)
    with pytest.raises(GenotypeError, match="holds 7 genotypes") as info:
        load_genotype(many)
    assert info.value.hint == f"pick one as {many}:NAME"
    with pytest.raises(GenotypeError, match="has no genotype 'PDART'") as info:
        load_genotype(f"{many}:PDART")
    assert info.value.hint == "did you mean 'PDARTS'?"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="no such genotype file"):
        load_genotype(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"name": "x",\n  "normal": }')
    with pytest.raises(GenotypeError) as info:
        load_genotype(tmp_path / "broken.json")
    assert info.value.loc.line == 2 and "invalid JSON" in info.value.message
    with pytest.raises(GenotypeError) as info:
        load_genotype("msr_dart")
    assert info.value.hint == "did you mean 'msr_darts'?"
    assert "available: " in info.value.message and "darts_v2" in info.value.message


def test_validate_locates_by_the_ir() -> None:
    loc = Location("x.genotype", 7, 14, 7, 29)
    cell = CellGenotype(nodes=(Node(edges=(Edge("sep_conv_3x3", 1), Edge("sep_conv_3x3", 5, loc=loc))),),
                        concat=(2,))
    g = Genotype("x", cell, CellGenotype(nodes=(Node(edges=(Edge("a", 0),)),), concat=(2,)))
    with pytest.raises(GenotypeError, match="input 5 is a later node") as info:
        validate_genotype(g)
    assert info.value.loc == loc
    with pytest.raises(GenotypeError, match="unknown operator 'a'"):
        validate_genotype(evolve(g, normal=g.reduce), known_ops=DARTS_OPS)
    mismatched = evolve(g, normal=evolve(g.reduce, inputs=3))
    with pytest.raises(GenotypeError, match="takes 3 inputs but the reduction cell takes 2"):
        validate_genotype(mismatched)
