"""Writes a tiny ONNX sequence classifier for tests: logits are the mean,
over the tokens, of a per-token row; the tokens of "ignore", "instructions"
and "previous" vote INJECTION, every other token BENIGN.

    python make_classifier.py OUT_DIR TOKENIZER_JSON

Needs the `onnx` and `numpy` packages (scripts/fetch-models installs them
in $LOOM_MODELS/.tools)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out, tokenizer = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
vocab = json.loads(tokenizer.read_text())["model"]["vocab"]
table = np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(vocab), 1))
for word in ("ignore", "instructions", "previous"):
    table[vocab[word]] = [0.0, 6.0]
graph = helper.make_graph(
    [
        helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
        helper.make_node("ReduceMean", ["rows", "axes"], ["logits"], keepdims=0),
    ],
    "tiny-classifier",
    [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "n"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "n"]),
    ],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
    [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 9
onnx.save(model, out / "model.onnx")
shutil.copyfile(tokenizer, out / "tokenizer.json")
(out / "config.json").write_text(json.dumps({"id2label": {"0": "BENIGN", "1": "INJECTION"}}))
