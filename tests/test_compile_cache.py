"""`purejaxppo.platform.compile_cache`: the cache directory's default, the JAX options
`enable_compilation_cache` sets at the edges of its ranges, and the hit and
miss counter. Like the CPU pool, a process-wide JAX setting the CLI applies;
these tests check it without changing this process's JAX config."""

import pytest


def test_default_cache_dir_order(monkeypatch, tmp_path):
    from purejaxppo.platform.compile_cache import default_cache_dir

    monkeypatch.setenv("PUREJAXPPO_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("PUREJAXPPO_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "purejaxppo" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "purejaxppo" / "xla"


def test_enable_compilation_cache_sets_jax_config_at_the_edges_of_its_ranges(monkeypatch, tmp_path):
    """min_compile_time_s=0 (>= 0) and max_bytes=-1 (no cap) are allowed; the
    three options are set and JAX's once-per-process cache decision reset."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from purejaxppo.platform.compile_cache import enable_compilation_cache

    updates, resets = [], []
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
    monkeypatch.setattr(compilation_cache, "reset_cache", lambda: resets.append(1))
    path = enable_compilation_cache(tmp_path / "c", min_compile_time_s=0, max_bytes=-1)
    assert path == tmp_path / "c" and path.is_dir()
    assert updates == [("jax_compilation_cache_dir", str(tmp_path / "c")),
                       ("jax_persistent_cache_min_compile_time_secs", 0.0),
                       ("jax_compilation_cache_max_size", -1)]
    assert resets == [1]
    with pytest.raises(ValueError, match=r"max_bytes=-2 must be > 0, or -1 for no cap"):
        enable_compilation_cache(tmp_path / "c", max_bytes=-2)


def test_cache_counter_counts_lookups_hits_and_misses():
    import jax

    from purejaxppo.platform.compile_cache import _HITS, _LOOKUPS, CacheCounter

    before = jax.config.jax_compilation_cache_dir
    try:
        for directory, lookups, hits, status in [("/nowhere", 3, 1, "hit"), ("/nowhere", 2, 0, "miss"),
                                                  (None, 2, 0, "off")]:
            jax.config.update("jax_compilation_cache_dir", directory)
            with CacheCounter() as counter:
                for _ in range(lookups):
                    jax.monitoring.record_event(_LOOKUPS)
                for _ in range(hits):
                    jax.monitoring.record_event(_HITS)
            jax.monitoring.record_event(_LOOKUPS)  # after the block: not counted
            assert (counter.lookups, counter.hits, counter.misses, counter.status) == (
                lookups, hits, lookups - hits, status)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
