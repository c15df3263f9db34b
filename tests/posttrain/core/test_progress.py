"""posttrain.core.progress: the per-step memory reading behind `mem/rss_mb`."""

from posttrain.core.progress import rss_mb


def test_rss_follows_what_the_process_holds():
    before = rss_mb()
    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert rss_mb() - before > 150
    del block
