"""Recipe names (the egs2 directory suffixes users already know) -> ESPnet2 task classes.

Kept as strings so that naming a recipe never imports every task: several need optional
packages (and the ones marked below do not exist in every espnet release).
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    "asr1": "espnet2.tasks.asr.ASRTask",
    "asr2": "espnet2.tasks.asr2.ASR2Task",
    "asvspoof1": "espnet2.tasks.asvspoof.ASVSpoofTask",
    "cls1": "espnet2.tasks.cls.CLSTask",
    "codec1": "espnet2.tasks.gan_codec.GANCodecTask",
    "diar1": "espnet2.tasks.diar.DiarizationTask",
    "enh1": "espnet2.tasks.enh.EnhancementTask",
    # GAN TTS recipes are tts1 recipes run with `tts.sh --tts_task gan_tts` (VITS, JETS, joint text2wav).
    "gan_tts": "espnet2.tasks.gan_tts.GANTTSTask",
    # egs2/TEMPLATE/{enh_asr1,enh_diar1,enh_st1} all train with espnet2.bin.enh_s2t_train.
    "enh_asr1": "espnet2.tasks.enh_s2t.EnhS2TTask",
    "enh_diar1": "espnet2.tasks.enh_s2t.EnhS2TTask",
    "enh_st1": "espnet2.tasks.enh_s2t.EnhS2TTask",
    "hubert1": "espnet2.tasks.hubert.HubertTask",
    "lid1": "espnet2.tasks.lid.LIDTask",
    "lm1": "espnet2.tasks.lm.LMTask",
    "mt1": "espnet2.tasks.mt.MTTask",
    "s2st1": "espnet2.tasks.s2st.S2STTask",
    "s2t1": "espnet2.tasks.s2t.S2TTask",
    # Spoken dialogue and SpeechLM recipes train the SpeechLM task (not in every release).
    "sds1": "espnet2.tasks.speechlm.SpeechLMTask",
    "slu1": "espnet2.tasks.slu.SLUTask",
    "speechlm1": "espnet2.tasks.speechlm.SpeechLMTask",
    "spk1": "espnet2.tasks.spk.SpeakerTask",
    "ssl1": "espnet2.tasks.ssl.SSLTask",
    "st1": "espnet2.tasks.st.STTask",
    "svs1": "espnet2.tasks.svs.SVSTask",
    "svs2": "espnet2.tasks.svs2.SVS2Task",
    "tts1": "espnet2.tasks.tts.TTSTask",
    "tts2": "espnet2.tasks.tts2.TTS2Task",
    "uasr1": "espnet2.tasks.uasr.UASRTask",
}
