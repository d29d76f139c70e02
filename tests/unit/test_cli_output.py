"""How the commands print what they show (appliance/cli/common.py): one JSON form and one table form."""

from __future__ import annotations

import json

import pytest

from appliance.cli import main
from appliance.cli.common import show, table


def test_a_table_pads_each_column_to_its_widest_cell_and_ends_no_line_in_spaces() -> None:
    assert table([("NAME", "SIZE", "FROM"), ("tiny:q8_0", "12 MiB", ""), ("a", "1.5 GiB", "store")]) == [
        "NAME       SIZE     FROM",
        "tiny:q8_0  12 MiB",
        "a          1.5 GiB  store",
    ]


def test_show_prints_json_or_only_then_builds_the_text(capsys: pytest.CaptureFixture[str]) -> None:
    def text() -> str:
        raise AssertionError("the text is not built for --json")

    show({"b": 1, "a": [2]}, as_json=True, text=text)
    assert capsys.readouterr().out == '{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'
    show({"b": 1}, as_json=False, text=lambda: "b is 1")
    assert capsys.readouterr().out == "b is 1\n"


def test_key_list_is_a_table_and_its_json_the_same_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "new", "--name", "a-long-client-name", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert main(["key", "new"]) == 0
    capsys.readouterr()
    assert main(["key", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split()[1:] == ["a-long-client-name", made["file"]]
    assert lines[1].split()[1:] == ["-", made["file"]]
    assert lines[0].index(made["file"]) == lines[1].index(made["file"])  # the columns line up
    assert main(["key", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["name"], k["source"]) for k in listed] == [
        ("a-long-client-name", made["file"]),
        ("", made["file"]),
    ]
