"""data.csv is read by name and validated; the unpublished CSVs are read tolerantly."""

from __future__ import annotations

import pytest

from nights import SchemaError, read_data_csv, read_jnd_csv, read_raw_csv
from nights.schema import DATA_CSV_COLUMNS

HEADER = ",".join(DATA_CSV_COLUMNS)
GOOD_ROWS = [
    "0,1,0,6,ref/000/001.png,distort/000/001_0.png,distort/000/001_1.png,train,True,goldfish",
    "1,0.0,1.0,11,ref/000/004.png,distort/000/004_1.png,distort/000/004_0.png,test,false,"
    '"tench, Tinca tinca"',
    "2,1.0,0.0,3,ref/001/010.png,distort/001/010_0.png,distort/001/010_1.png,val,1,"
    '"a ""vintage"" car, red"',
    "3,0,1,7.0,ref/001/011.png,distort/001/011_0.png,distort/001/011_1.png,test,0,bus",
]


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_values_by_name_with_their_types(tmp_path):
    frame = read_data_csv(write(tmp_path, HEADER + "\n" + "\n".join(GOOD_ROWS) + "\n"))
    assert list(frame.columns) == list(DATA_CSV_COLUMNS)
    assert frame["is_imagenet"].tolist() == [True, False, True, False]
    assert frame["left_vote"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert frame["votes"].tolist() == [6, 11, 3, 7]
    assert frame["prompt"].tolist()[1:3] == ["tench, Tinca tinca", 'a "vintage" car, red']
    # The paths stay as written: the second row has swapped sides.
    assert frame.loc[1, "left_path"] == "distort/000/004_1.png"
    assert str(frame["id"].dtype) == "int64" and str(frame["votes"].dtype) == "int64"


def test_column_order_does_not_matter(tmp_path):
    columns = list(DATA_CSV_COLUMNS)[::-1]
    rows = [
        ",".join(reversed(row.split(",")))
        for row in ["0,1,0,6,ref/a.png,distort/a_0.png,distort/a_1.png,train,True,cat"]
    ]
    frame = read_data_csv(write(tmp_path, ",".join(columns) + "\n" + rows[0] + "\n"))
    assert frame.loc[0, "prompt"] == "cat" and frame.loc[0, "votes"] == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["data.csv", "empty"]),
        (HEADER + "\n", ["no rows"]),
        (HEADER.replace(",", ";") + "\n", ["semicolon-separated"]),
        (HEADER.replace(",", "\t") + "\n", ["tab-separated"]),
        (HEADER.replace(",prompt", "") + "\n", ["line 1", "missing column(s): prompt"]),
        (HEADER + ",extra\n", ["line 1", "unexpected column(s): extra"]),
    ],
)
def test_bad_headers_are_named(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SchemaError) as error:
        read_data_csv(path)
    for fragment in [str(path), *expected]:
        assert fragment in str(error.value)


def test_missing_and_unexpected_columns_are_listed_together(tmp_path):
    header = HEADER.replace("votes,", "").replace("split", "partition")
    with pytest.raises(SchemaError) as error:
        read_data_csv(write(tmp_path, header + "\n"))
    message = str(error.value)
    assert "missing column(s): votes, split" in message
    assert "unexpected column(s): partition" in message


def test_extra_columns_can_be_kept(tmp_path):
    text = HEADER + ",round\n" + GOOD_ROWS[0] + ",2\n"
    frame = read_data_csv(write(tmp_path, text), keep_extra_columns=True)
    assert frame.loc[0, "round"] == "2" and list(frame.columns)[-1] == "round"


@pytest.mark.parametrize(
    ("bad_row", "column", "value"),
    [
        (GOOD_ROWS[0].replace(",True,", ",maybe,"), "is_imagenet", "'maybe'"),
        (GOOD_ROWS[0].replace("0,1,0,6,", "0,1,0,six,"), "votes", "'six'"),
        (GOOD_ROWS[0].replace("0,1,0,6,", "0,1,0,6.5,"), "votes", "'6.5'"),
        (GOOD_ROWS[0].replace("0,1,0,6,", "0,1.5,0,6,"), "left_vote", "'1.5'"),
        (GOOD_ROWS[0].replace("0,1,0,6,", "x,1,0,6,"), "id", "'x'"),
        (GOOD_ROWS[0].replace(",train,", ",training,"), "split", "'training'"),
        (GOOD_ROWS[0].replace("ref/000/001.png", "/abs/ref.png"), "ref_path", "'/abs/ref.png'"),
        (GOOD_ROWS[0].replace("ref/000/001.png", "../ref.png"), "ref_path", "'../ref.png'"),
    ],
)
def test_bad_values_name_file_line_column_and_value(tmp_path, bad_row, column, value):
    path = write(tmp_path, "\n".join([HEADER, GOOD_ROWS[1], bad_row, GOOD_ROWS[2]]) + "\n")
    with pytest.raises(SchemaError) as error:
        read_data_csv(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message
    assert f"column '{column}'" in message and value in message


def test_every_bad_row_is_reported_not_only_the_first(tmp_path):
    rows = [
        GOOD_ROWS[0].replace(",True,", ",nope,").replace("0,1,0,6", f"{i},1,0,6", 1)
        for i in range(40)
    ]
    with pytest.raises(SchemaError) as error:
        read_data_csv(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    message = str(error.value)
    assert "40 problem(s)" in message and "line 2:" in message and "and 15 more" in message


def test_unbalanced_quote_and_wrong_field_count(tmp_path):
    quoted = GOOD_ROWS[0].replace(",goldfish", ',"gold"fish"')
    with pytest.raises(SchemaError, match=r"line \d+: malformed CSV"):
        read_data_csv(write(tmp_path, HEADER + "\n" + quoted + "\n"))
    short = GOOD_ROWS[0].rsplit(",", 1)[0]
    with pytest.raises(SchemaError, match="line 2: 9 fields where the header has 10"):
        read_data_csv(write(tmp_path, HEADER + "\n" + short + "\n"))


def test_repeated_ids_and_inconsistent_votes(tmp_path):
    with pytest.raises(SchemaError, match="line 3: column 'id': 0 repeats the id of line 2"):
        read_data_csv(write(tmp_path, "\n".join([HEADER, GOOD_ROWS[0], GOOD_ROWS[0]]) + "\n"))
    uneven = GOOD_ROWS[0].replace("0,1,0,6,", "0,1,1,6,")
    with pytest.raises(SchemaError, match="does not add up to 1"):
        read_data_csv(write(tmp_path, HEADER + "\n" + uneven + "\n"))


def test_missing_file(tmp_path):
    with pytest.raises(SchemaError, match="file not found"):
        read_data_csv(tmp_path / "absent.csv")


def test_raw_csv_maps_known_names_and_keeps_unknown_ones(tmp_path):
    text = (
        "triplet_id,Reference,left,right,vote_right,num_votes,category,round\n"
        '5,ref/a.png,distort/a_0.png,distort/a_1.png,0.25,4,"x, y",2\n'
        "9,ref/b.png,distort/b_1.png,distort/b_0.png,1,3,z,1\n"
    )
    frame = read_raw_csv(write(tmp_path, text, "nights_raw.csv"))
    assert frame["id"].tolist() == [5, 9]
    assert frame["right_vote"].tolist() == [0.25, 1.0]
    assert frame["left_vote"].tolist() == [0.75, 0.0]
    assert frame["votes"].tolist() == [4, 3]
    assert frame["prompt"].tolist() == ["x, y", "z"]
    assert frame["round"].tolist() == ["2", "1"]
    assert frame["left_path"].tolist() == ["distort/a_0.png", "distort/b_1.png"]
    assert frame["split"].isna().all()


def test_raw_csv_without_a_required_column_lists_what_it_found(tmp_path):
    path = write(tmp_path, "ref,left,right_image,score\nr.png,a.png,b.png,3\n", "nights_raw.csv")
    with pytest.raises(SchemaError) as error:
        read_raw_csv(path)
    message = str(error.value)
    assert "right_vote or left_vote" in message
    assert "Columns found: ref, left, right_image, score" in message


def test_raw_csv_bad_value_names_the_source_column(tmp_path):
    text = "ref,left,right,p_right\nr.png,a.png,b.png,0.5\nr2.png,a2.png,b2.png,high\n"
    with pytest.raises(SchemaError, match="line 3: column 'p_right': 'high' is not a number"):
        read_raw_csv(write(tmp_path, text, "nights_raw.csv"))


def test_jnd_long_wide_and_per_answer_layouts_agree(tmp_path):
    long = read_jnd_csv(
        write(
            tmp_path,
            (
                "id,ref_path,distort_path,same,votes,session\n"
                "1,r.png,a.png,0.5,4,s1\n1,r.png,b.png,0.0,4,s1\n"
            ),
            "long.csv",
        )
    )
    wide = read_jnd_csv(
        write(
            tmp_path,
            ("id,ref,left,right,left_same,right_same,votes\n1,r.png,a.png,b.png,0.5,0.0,4\n"),
            "wide.csv",
        )
    )
    answers = read_jnd_csv(
        write(
            tmp_path,
            "ref,distort,response\n"
            + "".join(f"r.png,a.png,{r}\n" for r in ["same", "different", "Same", "diff"])
            + "".join(f"r.png,b.png,{r}\n" for r in ["different", "0", "different", "different"]),
            "answers.csv",
        )
    )
    for frame in (long, wide, answers):
        assert frame[["ref_path", "distort_path", "same", "votes"]].values.tolist() == [
            ["r.png", "a.png", 0.5, 4],
            ["r.png", "b.png", 0.0, 4],
        ]
    assert long["session"].tolist() == ["s1", "s1"]


def test_jnd_errors(tmp_path):
    with pytest.raises(SchemaError, match="same or response"):
        read_jnd_csv(write(tmp_path, "ref,distort,score\nr.png,a.png,1\n", "j1.csv"))
    with pytest.raises(SchemaError, match="line 3: column 'response': 'perhaps'"):
        read_jnd_csv(
            write(
                tmp_path, "ref,distort,response\nr.png,a.png,same\nr.png,a.png,perhaps\n", "j2.csv"
            )
        )
    with pytest.raises(SchemaError, match="appears more than once"):
        read_jnd_csv(write(tmp_path, "ref,distort,same\nr.png,a.png,1\nr.png,a.png,0\n", "j3.csv"))
