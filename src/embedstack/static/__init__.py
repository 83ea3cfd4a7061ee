"""Static word vectors: KeyedVectors, Word2Vec, FastText, GloVe, NPLM, sentence pooling."""
