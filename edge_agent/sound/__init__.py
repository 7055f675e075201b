"""Sound from the microphone: weighting filters, the level meter, the noise source, the audio ring."""
