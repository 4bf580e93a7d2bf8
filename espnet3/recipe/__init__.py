"""The egs3 front end: an ESPnet3 recipe (``run.py``, ``conf/<role>.yaml``, ``dataset/``, ``src/``) run here.

Upstream's role configs are merged over the system's TEMPLATE (:mod:`espnet3.utils.config_utils`),
then translated once into this project's train.yaml (:mod:`espnet3.recipe.convert`), so an egs3
recipe ends in the same config, checks and Ray stages as a train.yaml does.
"""
