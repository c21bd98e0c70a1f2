"""Property-based: the JSONL loader and template formatting raise nothing but RetainError."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retain.data import TaskFormat, check_template, load_jsonl, render
from retain.errors import RetainError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


@SETTINGS
@given(st.binary(max_size=400))
def test_loader_on_arbitrary_bytes(tmp_path, data):
    f = tmp_path / "data.jsonl"
    f.write_bytes(data)
    try:
        rows = load_jsonl(f)
    except RetainError as e:
        assert "\n" not in str(e) and str(f) in str(e)
        return
    assert rows and all(isinstance(r["input"], str) and isinstance(r["output"], str) for r in rows)


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(["input", "output", "x"]), json_values, max_size=3)
                | st.dictionaries(st.just("input"), st.text()), max_size=4))
def test_loader_on_arbitrary_json_lines(tmp_path, objs):
    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(o) for o in objs))
    try:
        rows = load_jsonl(f)
    except RetainError as e:
        assert "\n" not in str(e)
        return
    assert len(rows) == len(objs)


@SETTINGS
@given(st.text(max_size=60), st.text(max_size=30))
def test_templates_are_formatted_never_evaluated(template, value):
    try:
        t = check_template(template)
    except RetainError as e:
        assert "\n" not in str(e)
        return
    out = render(t, {"input": value, "output": "o"}) if set(_fields(t)) <= {"input", "output"} else None
    if out is not None:
        assert value in out or t.count("{input}") == 0
    # TaskFormat never fails on a checked template whose fields are present
    fmt = TaskFormat(t)
    example = {name: value for name in _fields(t)} | {"output": "o"}
    assert isinstance(fmt.prompt(example), str)


def _fields(t):
    import string

    return [n for _, n, _, _ in string.Formatter().parse(t) if n]
