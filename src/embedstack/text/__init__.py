"""Text processing: normalisation, tokenization, vocabulary."""

from embedstack.text.tokenize import ENGLISH_STOPWORDS, WORD_PATTERN, Analyzer, normalize, to_text
from embedstack.text.vocab import Vocabulary

__all__ = ["Analyzer", "ENGLISH_STOPWORDS", "WORD_PATTERN", "Vocabulary", "normalize", "to_text"]
