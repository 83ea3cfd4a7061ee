"""Text processing: normalisation, tokenization, vocabulary."""

from embedstack.text.tokenize import ENGLISH_STOPWORDS, WORD_PATTERN, Analyzer, normalize, to_text

__all__ = ["Analyzer", "ENGLISH_STOPWORDS", "WORD_PATTERN", "normalize", "to_text"]
