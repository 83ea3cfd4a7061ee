"""The catalog of named datasets: canonical URLs, checksums, local folder names.

Checksum provenance (where a value is not published by the dataset's authors, the comment says so):
sha256 values marked "local copy" were computed here from the files under ``/work/shared/data`` whose
SOURCE.md documents them as byte-identical to the official release (same md5/sha256 as the upstream
file, or copied unmodified from the authors' repository at the pinned commit).
"""

from __future__ import annotations

from embedstack.data._registry import DatasetSpec, Download

__all__ = ["CATALOG"]

_GENSIM = "https://raw.githubusercontent.com/piskvorky/gensim/37f90ec121eb7cd401448a947e80953e0c53ccdc/gensim/test/test_data"
_BANKING = "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/57ec275d8078af65b7731c2a98be812d844a6d6b/banking_data"
_AGENTSET = "https://raw.githubusercontent.com/agentset-ai/embedding-leaderboard/7f86b0fd942ba327ef228df7e774ba50cfe9b91a/datasets"
_UD_EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb"


def _agentset(sub: str, sums: dict[str, str], desc: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"{sub}-subset",
        kind="retrieval",
        description=desc,
        local_dirs=(f"beir-subsets-agentset/{sub}",),
        marker="corpus.jsonl",
        # Copied unmodified from the pinned commit; sha256 computed from the local copy.
        downloads=tuple(Download(f"{_AGENTSET}/{sub}/{rel}", rel, sha256=sha) for rel, sha in sums.items()),
        homepage="https://github.com/agentset-ai/embedding-leaderboard",
        license="MS MARCO: research terms; DBpedia-Entity: CC BY-SA",
    )


CATALOG: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="scifact",
        kind="retrieval",
        description="BEIR SciFact: 5,183 scientific abstracts, claims as queries (Wadden et al. 2020; BEIR).",
        local_dirs=("beir-scifact", "scifact"),
        marker="corpus.jsonl",
        # md5 published in the BEIR README; no sha256 is published for the zip.
        downloads=(Download("https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
                            "scifact.zip", md5="5f7d1de60b170fc8027bb7898e2efca1", extract=True),),
        # sha256 of the official members (equal to the BEIR Git-LFS pointers, see beir-scifact/SOURCE.md).
        files=(("corpus.jsonl", "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6"),
               ("queries.jsonl", "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313")),
        homepage="https://github.com/beir-cellar/beir",
        license="CC BY-NC 2.0",
    ),
    DatasetSpec(
        name="stsb",
        kind="sts",
        description="STS Benchmark (Cer et al. 2017): 8,628 sentence pairs scored 0-5, train/dev/test.",
        local_dirs=("stsbenchmark", "stsb"),
        marker="sts-test.csv",
        aliases=("sts-b", "stsbenchmark", "sts"),
        # No checksum is published for the tarball; its members are verified instead (sha256 from the
        # local copy of the original release files, see stsbenchmark/SOURCE.md).
        downloads=(Download("http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
                            "Stsbenchmark.tar.gz", extract=True),),
        files=(("sts-train.csv", "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82"),
               ("sts-dev.csv", "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234"),
               ("sts-test.csv", "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a")),
        homepage="http://ixa2.si.ehu.eus/stswiki",
        license="CC BY-SA 4.0 (scores); per-source licences for the sentences",
    ),
    DatasetSpec(
        name="analogies",
        kind="analogies",
        description="Google word analogies (Mikolov et al. 2013): 19,544 questions in 14 sections.",
        local_dirs=("word-analogy",),
        marker="questions-words.txt",
        aliases=("google-analogies", "questions-words"),
        # sha256 from the local copy (md5 8b7461cb... equals the word2vec release copy).
        downloads=(Download(f"{_GENSIM}/questions-words.txt", "questions-words.txt",
                            sha256="8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36", size=603_955),),
        homepage="https://code.google.com/archive/p/word2vec/",
        license="Apache-2.0",
    ),
    DatasetSpec(
        name="wordsim353",
        kind="word-similarity",
        description="WordSim-353 (Finkelstein et al. 2002): 353 word pairs with human similarity 0-10.",
        local_dirs=("word-similarity/gensim", "word-similarity"),
        marker="wordsim353.tsv",
        aliases=("wordsim", "ws353"),
        # sha256 from the local copy of gensim's test file at the pinned commit.
        downloads=(Download(f"{_GENSIM}/wordsim353.tsv", "wordsim353.tsv",
                            sha256="f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d", size=7_186),),
        homepage="http://www.cs.technion.ac.il/~gabr/resources/data/wordsim353/",
    ),
    DatasetSpec(
        name="enwiki",
        kind="corpus",
        description="English Wikipedia plain text (WikiExtractor <doc> format), 12,980 articles / 32.5 M words.",
        local_dirs=("enwiki-extract", "enwiki"),
        aliases=("wikipedia", "enwiki-extract"),
        homepage="https://dumps.wikimedia.org/enwiki/ (run WikiExtractor on a pages-articles dump)",
        license="CC BY-SA 3.0",
    ),
    DatasetSpec(
        name="snli",
        kind="nli",
        description="SNLI 1.0 (Bowman et al. 2015): premise/hypothesis pairs labelled entailment/neutral/contradiction.",
        local_dirs=("nli/snli-devtest-senteval", "snli"),
        # No checksum is published for snli_1.0.zip: the download is not verified.
        downloads=(Download("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "snli_1.0.zip", extract=True),),
        homepage="https://nlp.stanford.edu/projects/snli/",
        license="CC BY-SA 4.0",
    ),
    DatasetSpec(
        name="banking77",
        kind="classification",
        description="BANKING77 (Casanueva et al. 2020): 13,083 customer-service queries, 77 intents.",
        local_dirs=("banking77",),
        marker="test.csv",
        # The authors' repository at a pinned commit; sha256 from the local copy of those files.
        downloads=(
            Download(f"{_BANKING}/train.csv", "train.csv",
                     sha256="b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b", size=839_073),
            Download(f"{_BANKING}/test.csv", "test.csv",
                     sha256="d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d", size=239_961),
            Download(f"{_BANKING}/categories.json", "categories.json",
                     sha256="53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63", size=2_036),
        ),
        homepage="https://github.com/PolyAI-LDN/task-specific-datasets",
        license="CC BY 4.0",
    ),
    DatasetSpec(
        name="20newsgroups",
        kind="classification",
        description="20 Newsgroups, bydate split: 11,314 train / 7,532 test posts, 20 classes.",
        local_dirs=("20newsgroups",),
        marker="20news-bydate.tar.gz",
        aliases=("20ng", "newsgroups"),
        # sha256 as pinned by scikit-learn's fetch_20newsgroups for this archive (kept packed).
        downloads=(Download("http://qwone.com/~jason/20Newsgroups/20news-bydate.tar.gz", "20news-bydate.tar.gz",
                            sha256="8f1b2514ca22a5ade8fbb9cfa5727df95fa587f4c87b786e15c759fa66d95610"),),
        homepage="http://qwone.com/~jason/20Newsgroups/",
    ),
    DatasetSpec(
        name="agnews",
        kind="classification",
        description="AG News (Zhang et al. 2015): news topic classification, 4 classes (title + description).",
        local_dirs=("ag-news", "agnews"),
        marker="test.csv",
        aliases=("ag-news", "ag_news"),
        # fast.ai's mirror of the official ag_news_csv archive; no archive checksum is published, so the
        # members are verified (sha256 of the official test.csv/classes.txt from the local copy).
        downloads=(Download("https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz", "ag_news_csv.tgz",
                            extract=True),),
        files=(("test.csv", "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
               ("classes.txt", "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5")),
        homepage="http://groups.di.unipi.it/~gulli/AG_corpus_of_news_articles.html",
        license="non-commercial research use",
    ),
    DatasetSpec(
        name="imdb",
        kind="classification",
        description="IMDB Large Movie Review Dataset (Maas et al. 2011): 50k labelled + 50k unlabelled reviews.",
        local_dirs=("imdb",),
        aliases=("aclimdb",),
        # sha256 of the official aclImdb_v1.tar.gz (also in imdb/SOURCE.md as c40f74a1...58fe).
        downloads=(Download("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", "aclImdb_v1.tar.gz",
                            sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
                            extract=True, size=84_125_825),),
        homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
    ),
    DatasetSpec(
        name="ud-english-ewt",
        kind="tagging",
        description="UD English Web Treebank v2.16 (Silveira et al. 2014): 12,544 / 2,001 / 2,077 sentences, UPOS tags.",
        local_dirs=("ud-english-ewt",),
        marker="en_ewt-ud-test.conllu",
        aliases=("ud-ewt", "en_ewt", "ewt"),
        # The official repository at the commit of release v2.16; sha256 from the local copy (byte-identical to
        # that commit's blobs, see ud-english-ewt/SOURCE.md).
        downloads=tuple(Download(f"{_UD_EWT}/en_ewt-ud-{split}.conllu", f"en_ewt-ud-{split}.conllu", sha256=sha, size=size)
                        for split, sha, size in (
                            ("train", "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b", 14_203_025),
                            ("dev", "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6", 1_805_545),
                            ("test", "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd", 1_804_515))),
        homepage="https://universaldependencies.org/treebanks/en_ewt/",
        license="CC BY-SA 4.0",
    ),
    DatasetSpec(
        name="wic",
        kind="word-in-context",
        description="WiC (Pilehvar & Camacho-Collados 2019): 5,428 / 638 / 1,400 sentence pairs, same sense of a word or not.",
        local_dirs=("wic",),
        marker="README.txt",  # flat ({split}.data.txt) in the local copy, {split}/{split}.data.txt in the zip
        aliases=("word-in-context",),
        # sha256 of the official package as recorded in wic/SOURCE.md (the local files equal its members).
        downloads=(Download("https://pilehvar.github.io/wic/package/WiC_dataset.zip", "WiC_dataset.zip",
                            sha256="f1a2fb67d903c5b9b1180f1035d4228f7c0254e8f5f868d556235457046bd4b2",
                            extract=True, size=275_984),),
        homepage="https://pilehvar.github.io/wic/",
        license="CC BY-NC 4.0",
    ),
    _agentset("msmarco", {
        "corpus.jsonl": "5444f4de73880fc48c5abe67bc9a2d9acc44c60c9b8173076f831dd527a21663",
        "queries.jsonl": "6ed23496f47ed2933c4575b379a0a96ff2ec6cd51e7f925a91de73de8e3635ab",
        "qrels/test.tsv": "1b20b1cc3f467edd91e762708f21556ec9d767145430b7f38eece6c7a95d38ef",
    }, "MS MARCO passages, 5,000-doc subset with TREC-DL-19 graded qrels (easy; not comparable to BEIR)."),
    _agentset("dbpedia", {
        "corpus.jsonl": "61b717c96ff548d27ad3d7fbfc2682c43daa538e3e9d0cd39d4ae9e99c1d306c",
        "queries.jsonl": "93f48e1e465351fbb8d3b5c711c08034e1277e1225553230341bad7e39f16362",
        "qrels/test.tsv": "e92204355209bd2c52eab3ae1b3e09819cd61f4b1f446e413a4872100519e3d0",
    }, "DBPedia-Entity, 5,000-doc subset with graded qrels (easy; not comparable to BEIR)."),
)
