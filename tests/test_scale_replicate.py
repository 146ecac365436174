"""bench/scale_replicate.py: a larger cached dataset of copies opens as complete caches."""

from __future__ import annotations

import json
import sys

import numpy as np

from clasp_pl.text.config import TextConfig
from helpers.data import REPO, data_module

sys.path.insert(0, str(REPO / "bench"))
import scale_replicate  # noqa: E402


def test_replicated_caches_open_complete_with_every_item_copied(records_file, tmp_path):
    text = TextConfig(model="tiny-random", freeze=True)
    small = data_module(records_file, tmp_path, text)
    n_items = sum(len(dataset) for dataset in small.datasets.values())
    shards = {
        store: len(json.loads((small.cache_root / store / "manifest.json").read_text())["shards"])
        for store in ("graphs", "tokens", "text_features")
    }
    big_file = scale_replicate.replicate_caches(
        records_file, tmp_path / "cache", 3, tmp_path / "big"
    )
    big = data_module(big_file, tmp_path, text)

    for store, count in shards.items():  # opened as they were made, not rebuilt
        manifest = json.loads((big.cache_root / store / "manifest.json").read_text())
        assert len(manifest["shards"]) == 3 * count
    assert sum(len(dataset) for dataset in big.datasets.values()) == 3 * n_items
    graphs = big.datasets["train"].graphs
    n_records = int(small.datasets["train"].graphs.field("record_index").max()) + 1
    record_index = graphs.field("record_index")
    assert record_index.max() >= 2 * n_records  # the third copy points at its own records
    groups = graphs.field("group_id")
    assert len(np.unique(groups)) == 3 * len(np.unique(groups[: len(groups) // 3]))
    batch = next(iter(big.train_dataloader()))
    assert batch["text_features"].shape[0] == batch["group_ids"].shape[0]


def test_scale_table_replaces_its_own_block_and_keeps_hand_written_text(tmp_path):
    import bench_scale

    results = tmp_path / "results.md"
    results.write_text("# r\n\n## paper scale\n\nnotes\n\n## later\n\nmore\n")
    bench_scale.replace_block(results, "bench_scale N=5", "table one")
    bench_scale.replace_block(results, "bench_scale N=9", "other N")
    bench_scale.replace_block(results, "bench_scale N=5", "table two")
    text = results.read_text()
    assert "table one" not in text and text.count("table two") == 1
    assert text.index("notes") < text.index("table two") < text.index("other N")
    assert text.index("other N") < text.index("## later") < text.index("more")


def test_prefix_caches_equal_the_caches_built_from_the_prefix(records_file, tmp_path):
    import itertools

    from clasp_pl.data.cache import ArrayStore
    from clasp_pl.data.datamodule import records_cache_root
    from clasp_pl.data.records import iter_record_lines, write_record_lines

    text = TextConfig(model="tiny-random", freeze=True)
    data_module(records_file, tmp_path / "full", text)
    prefix = tmp_path / "prefix.jsonl.gz"
    write_record_lines(itertools.islice(iter_record_lines(records_file), 7), prefix)
    built = data_module(prefix, tmp_path / "built", text)
    scale_replicate.prefix_caches(records_file, tmp_path / "full" / "cache", prefix)
    stores = ("graphs", "tokens", "text_features")
    root = records_cache_root(tmp_path / "full" / "cache", prefix)
    manifests = [(root / store / "manifest.json").read_text() for store in stores]
    cut = data_module(prefix, tmp_path / "full", text)
    assert [(root / store / "manifest.json").read_text() for store in stores] == manifests
    for store in stores:
        want, got = ArrayStore(built.cache_root / store), ArrayStore(cut.cache_root / store)
        assert len(got) == len(want) > 0
        for index in range(len(want)):
            for name, value in want[index].items():
                assert np.array_equal(got[index][name], value), (store, index, name)
