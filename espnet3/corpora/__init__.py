"""Synthetic corpora, made deterministically per seed with espeak-ng (no downloads at run time):
the spoken digits of the default job (:mod:`.digits`) and a small corpus per ESPnet2 task family
(:mod:`.synth`), both through one synthesiser (:mod:`.espeak`)."""
