"""Machine translation: ESPnet2's ``Text2Text`` on the source text's token ids.

ESPnet2's ``mt_inference`` feeds ``Text2Text`` the preprocessed ``src_text`` (token ids), as
the infer stage does. ``Text2Text`` defaults to ``ctc_weight: 0.5``, but an MT model has no
CTC branch (it fails on it); mt_inference's command line defaults to 0, and so does espnet3.
"""

from __future__ import annotations

from espnet3.systems.base.nbest import NBestInference


class MTInference(NBestInference):
    espnet2_class = "espnet2.bin.mt_inference.Text2Text"
    config_argument = "mt_train_config"
    model_argument = "mt_model_file"
    input_name = "src_text"
    default_options = {"ctc_weight": 0.0}
