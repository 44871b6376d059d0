"""Training jet encoders on resim data (``resim train``, ``resim finetune``, ``resim evaluate``)."""
