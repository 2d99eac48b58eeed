"""scan_in_pieces: a scan split into pieces (state carried, reset at run starts) equals one scan."""

import pytest
import torch

from lightning_viper.ops.ssd import scan_in_pieces, ssd_scan


@pytest.mark.parametrize("max_tokens", [4, 7, 16])
def test_pieces_equal_one_scan(max_tokens: int) -> None:
    torch.manual_seed(0)
    bt, t, h, p, g, n = 2, 29, 4, 3, 2, 5
    kw = dict(
        x=torch.randn(bt, t, h, p, dtype=torch.float64),
        dt=torch.randn(bt, t, h, dtype=torch.float64),
        A=-torch.rand(h, dtype=torch.float64),
        B=torch.randn(bt, t, g, n, dtype=torch.float64),
        C=torch.randn(bt, t, g, n, dtype=torch.float64),
        chunk_size=4,
        D=torch.randn(h, dtype=torch.float64),
        dt_softplus=True,
        initial_state=torch.randn(bt, h, p, n, dtype=torch.float64),
        # row 0: one run; row 1: runs that start exactly at piece starts 8 and 16 and inside pieces
        seq_idx=torch.tensor([[0] * t, [0] * 8 + [1] * 8 + [2] * 3 + [3] * 10]),
    )
    y_whole, final_whole = ssd_scan(**kw)
    y, final = scan_in_pieces(ssd_scan, max_tokens, **kw)
    # the scan accumulates in float32 internally: compare at float32 rounding
    torch.testing.assert_close(y, y_whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, final_whole, rtol=1e-5, atol=1e-5)
