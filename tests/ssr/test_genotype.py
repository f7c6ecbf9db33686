"""Genotype value type: JSON round-trip, stable id, validation errors, shipped paper network."""

import json

import pytest

from ssr.config import SpaceConfig
from ssr.method.genotype import Genotype, GenotypeError, space_log10_size


def paper() -> Genotype:
    return Genotype.load("ssr_cityscapes")


def test_shipped_genotype_is_the_papers_4_plus_9_network() -> None:
    g = paper()
    assert g.depths == (4, 9)
    assert [x.c_out for x in g.layers][:4] == [64, 52, 44, 48]
    assert g.reductions[1].c_in == 48 and g.reductions[1].c_out == 128
    assert [(x.dilation, x.pool) for x in g.layers][4] == (4, 2)  # r3_p2


def test_json_round_trip_is_exact_and_id_is_stable() -> None:
    g = paper()
    again = Genotype.from_json(g.to_json())
    assert again == g and hash(again) == hash(g)
    assert again.id == g.id and len(g.id) == 10
    assert g.with_head("search").id == g.id  # the head does not change the body's id


def test_saved_file_carries_its_id(tmp_path) -> None:
    p = tmp_path / "g.json"
    paper().save(p)
    assert json.loads(p.read_text())["id"] == paper().id
    assert Genotype.load(p) == paper()


def _mutate(**changes) -> dict:
    d = paper().to_dict()
    for path, value in changes.items():
        cur = d
        keys = path.split("__")
        for k in keys[:-1]:
            cur = cur[int(k)] if k.isdigit() else cur[k]
        cur[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers__1__c_in": 63}, "does not chain"),
        ({"layers__2__c_mid": -4}, "must be positive"),
        ({"layers__3__pool": 7}, "unknown op"),
        ({"layers__3__dilation": 0}, "unknown op"),
        ({"reductions__1__c_in": 64}, "reductions[1].c_in=64"),
        ({"head": "fpn"}, "unknown head"),
        ({"layers__0__c_out": "64"}, "expected an integer"),
        ({"layers__0__c_mid": 10**9}, "more than 8192"),  # a typo, not a network
        ({"layers__0__c_mid": 1e9}, "expected an integer"),
        ({"stem": 10**6, "reductions__0__c_in": 10**6}, "more than 8192"),
    ],
)
def test_validation_errors_name_the_problem(changes, message) -> None:
    with pytest.raises(GenotypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Genotype.from_dict(_mutate(**changes))


def test_broken_json_and_missing_file_give_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.load(bad)
    with pytest.raises(GenotypeError, match="does not exist"):
        Genotype.load(tmp_path / "missing.json")
    with pytest.raises(GenotypeError, match="unknown key 'colour'"):
        Genotype.from_dict({**paper().to_dict(), "colour": 1})
    with pytest.raises(GenotypeError, match="does not match its content"):
        Genotype.from_dict({**paper().to_dict(), "id": "0000000000"})


def test_what_the_network_cannot_build_is_refused_at_load(tmp_path) -> None:
    """A one-stage genotype cannot have the aggregation head (it fuses stage 1 with the last);
    a JSON key given twice is refused (JSON itself keeps the last); a binary file is one line."""
    one = paper().to_dict()
    one["reductions"] = one["reductions"][:1]
    one["layers"] = [x for x in one["layers"] if x["stage"] == 0]
    with pytest.raises(GenotypeError, match="aggregation head needs at least two stages"):
        Genotype.from_dict(one)
    assert Genotype.from_dict({**one, "head": "search"}).num_stages == 1
    text = paper().to_json()
    with pytest.raises(GenotypeError, match="duplicate key 'stem'"):
        Genotype.from_json(text[: text.rindex("}")] + ', "stem": 16}')
    binary = tmp_path / "g.json"
    binary.write_bytes(b"\xff\xfe\x81" * 8)
    with pytest.raises(GenotypeError, match="cannot be read"):
        Genotype.load(binary)


def test_space_size_counts_depth_choices() -> None:
    fixed = SpaceConfig(search_depth=False)
    # 14 layers of 10 ops x 9 x 9 widths: 810^14
    assert space_log10_size(fixed) == pytest.approx(14 * 2.908485, rel=1e-5)
    assert space_log10_size(SpaceConfig()) > space_log10_size(fixed)
