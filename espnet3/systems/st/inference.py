"""Speech translation: ESPnet2's ST ``Speech2Text`` (beam search over the target vocabulary)."""

from __future__ import annotations

from espnet3.systems.base.nbest import NBestInference


class STInference(NBestInference):
    espnet2_class = "espnet2.bin.st_inference.Speech2Text"
    config_argument = "st_train_config"
    model_argument = "st_model_file"
