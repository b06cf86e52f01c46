"""Sequence models on text: character language model, text classification, date seq2seq."""
