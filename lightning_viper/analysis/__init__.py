"""Information flow in a hybrid video LM: attention knockout and Mamba-2 implicit attention.

**Knockout** (:mod:`.knockout`). For one layer at a time, the flow from vision tokens to the
instruction tokens (V2I, the prompt text after the video) or to the response tokens (V2R) is
removed inside that layer only, and the eval set's task score and answer loss are measured. In an
attention layer the removed (query, key) pairs are masked before the softmax. In a Mamba-2 layer
the SSD is evaluated in its quadratic form,

    y_i = sum_{j <= i} (C_i . B_j) exp(cumA_i - cumA_j) Δ_j x_j + D x_i,

with the removed entries zeroed (:mod:`.ssd_form`; exact, float64 running sums, chunked over
query rows). The depthwise causal conv that precedes the SSD also mixes each position with its
K-1 predecessors, so the first K-1 instruction tokens after the video read vision inputs
through its taps; the knockout cuts those taps too (the conv outputs at receiver positions are
computed with the vision inputs zeroed), so nothing of the video reaches a receiver inside the
knocked-out layer. Greedy answers are re-run with the knockout at every generated token, so
V2R also covers the generated answer. Compression stages (TransV's transfer) are not knocked out.

**Implicit attention** (:mod:`.maps`). Per layer and head, the matrix a layer applies: the
attention layers' softmax, and for Mamba-2 the SSD matrix M[i, j] = (C_i . B_j) exp(cumA_i -
cumA_j) Δ_j (time step included). From it: the share of instruction and response queries' mass
on vision / instruction / other keys per layer, and a local / sparse / global class per head
(rule in :mod:`.maps`).

Both run through one typed hook of the backbone's shared layer loop,
``Backbone.forward(..., mixers={layer: MixerOverride})``, and the Mamba-2 mixer's
``ssd_inputs`` / ``ssd_output``; the default forward path is unchanged. ``viper analyze
knockout|attention`` (:mod:`.command`) runs them on a recipe's checkpoint. docs/analysis.md
describes the outputs.
"""

from lightning_viper.analysis.edges import FLOWS, Edges, Flow
from lightning_viper.analysis.knockout import KnockoutResult, Measurement, knockout, measure
from lightning_viper.analysis.maps import ClassRule, MapRecorder, layer_weights
from lightning_viper.analysis.mixers import Knockout, knocked_mixer
from lightning_viper.analysis.ssd_form import ssd_matrix, ssd_quadratic

__all__ = [
    "FLOWS",
    "ClassRule",
    "Edges",
    "Flow",
    "Knockout",
    "KnockoutResult",
    "MapRecorder",
    "Measurement",
    "knocked_mixer",
    "knockout",
    "layer_weights",
    "measure",
    "ssd_matrix",
    "ssd_quadratic",
]
