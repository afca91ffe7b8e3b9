"""vidseq: action recognition in video with per-frame CNN/YOLO features and LSTM/GRU heads.

Data flow: videos -> decode + sample frames -> backbone features -> sequences -> LSTM/GRU
-> logits -> metrics and MLflow artifacts. Importing vidseq is cheap: heavy libraries
(torch, decoders, mlflow) are imported by the modules that need them.
"""

__version__ = "0.1.0"
