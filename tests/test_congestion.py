"""router2's congestion maps, summarized for a design that does not route."""

from accel.flows import congestion


def _maps(tmp_path, n: int, nets: dict[str, int], grid: list[list[int]]) -> None:
    p = congestion.PREFIX
    (tmp_path / f"{p}_congestion_by_net_{n}.csv").write_text(
        "".join(f"{k},{v}\n" for k, v in nets.items())
    )
    (tmp_path / f"{p}_congestion_by_coordinate_{n}.csv").write_text(
        "".join(",".join(map(str, row)) + ",\n" for row in grid)
    )
    (tmp_path / f"{p}_congestion_by_wiretype_{n}.csv").write_text("type,bound=0,\n")


def test_summary_names_blocks_nets_and_region(tmp_path):
    grid = [[0] * 6 for _ in range(8)]
    grid[5][2] = grid[6][3] = 50  # all of it at x 5-6, y 2-3
    _maps(tmp_path, 1, {"top.a.x": 1}, [[0]])
    _maps(tmp_path, 12, {"top.acc.array.pe_1[3]": 40, "top.acc.array.pe_2": 30,
                         "top.acc.select[0]": 25, "top.acc.drain.q.w": 5}, grid)  # fmt: skip
    doc = congestion.summarize(tmp_path)
    assert doc["iteration"] == 12 and doc["overuse"] == 100
    assert doc["by_block"] == {"top.acc.array": 70, "top.acc": 25, "top.acc.drain": 5}
    assert next(iter(doc["worst_nets"])) == "top.acc.array.pe_1[3]"
    assert doc["region"] == {"x": [5, 6], "y": [2, 3]}
    assert congestion.describe(doc).startswith("overused at iteration 12: top.acc.array 70")
    congestion.prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "congestion_congestion_by_coordinate_12.csv",
        "congestion_congestion_by_net_12.csv",
    ]


def test_no_maps_no_summary(tmp_path):
    assert congestion.summarize(tmp_path) is None and congestion.describe(None) == ""
    congestion.prune(tmp_path)
