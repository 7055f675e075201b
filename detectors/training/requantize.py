"""Turn an old uint8-quantised TFLite model into the same network quantised int8 inside.

Why: LiteRT's CPU delegate (XNNPACK) has fast signed-int8 kernels with per-channel weights
(AVX-VNNI / AVX512 on x86, NEON dot product on ARM) and only slow generic ones for the unsigned,
per-tensor quantisation that 2018-era models (MobileNet V1 embedding extractor, SSD MobileNet V1
COCO) were exported with. Measured on this project's build host, one thread: the V1 backbone
18.8 -> 6.8 ms a pass, the SSD 25.8 -> 11.9 ms (`bench/detectors.py` has the figures in context).

What changes, and what does not:
- activations: uint8 with zero point z becomes int8 with zero point z - 128, same scale. Exact:
  every value is the same real number as before;
- convolution and fully-connected weights: dequantised, then quantised symmetric per output
  channel (the int8 kernels require a zero point of 0). Not exact: each weight moves by less
  than half of its channel's new step. On the 40 smoke photos tried, the V1 pooled features kept
  a cosine of >= 0.99 with the original's; the heads are retrained on the new features;
- biases: int32 on the new per-channel scale (input scale x weight scale);
- the interface stays: uint8 graph inputs and outputs, each with a QUANTIZE op between it and
  the int8 inside (as TF2's full-integer models have), so the runtime code does not change;
- a custom op (the SSD's TFLite_Detection_PostProcess reads uint8) keeps uint8 inputs, fed by a
  QUANTIZE op each;
- int8 CONCATENATION needs all inputs on the output's scale and zero point: the tensors that
  feed it (through RESHAPEs) are given them, which only changes the convolution that makes them.

    python -m detectors.training.requantize SRC.tflite DST.tflite

Deterministic: the same input file gives the same bytes. Needs `ai-edge-litert` (its schema and
flatbuffer helpers) and numpy; no TensorFlow.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def _schema() -> tuple[Any, Any]:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu
    return fb, fu


def requantize(model_bytes: bytes) -> bytes:
    """The int8-inside version of a uint8 model (see the module docstring)."""
    fb, fu = _schema()
    T, B = fb.TensorType, fb.BuiltinOperator
    names = {v: k for k, v in vars(B).items() if not k.startswith("_")}
    model = fu.read_model_from_bytearray(bytearray(model_bytes))
    if len(model.subgraphs) != 1:
        raise ValueError("only single-graph models are handled")
    graph = model.subgraphs[0]
    codes = [fu.get_builtin_code_from_operator_code(oc) for oc in model.operatorCodes]

    def data(tensor: Any) -> np.ndarray | None:
        raw = model.buffers[tensor.buffer].data
        return None if raw is None or len(raw) == 0 else np.asarray(raw, dtype=np.uint8)

    def set_data(tensor: Any, array: np.ndarray) -> None:
        model.buffers[tensor.buffer].data = np.frombuffer(array.tobytes(), np.uint8)

    weight_axis: dict[int, int] = {}
    bias_of: dict[int, tuple[int, int]] = {}  # bias tensor -> (op input tensor, weight tensor)
    custom_inputs: set[int] = set()
    for op in graph.operators:
        name = names.get(codes[op.opcodeIndex], "")
        if name in _WEIGHT_AXIS:
            weight_axis[op.inputs[1]] = _WEIGHT_AXIS[name]
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                bias_of[op.inputs[2]] = (op.inputs[0], op.inputs[1])
        elif codes[op.opcodeIndex] == B.CUSTOM:
            custom_inputs.update(i for i in op.inputs if i >= 0)
    boundary = set(graph.inputs) | set(graph.outputs)
    # first, so that a bias below is computed on its input's final scale
    _same_scale_into_concat(graph, codes, B)

    old_weight_scale: dict[int, float] = {}
    new_weight_scale: dict[int, np.ndarray] = {}
    for index, tensor in enumerate(graph.tensors):
        if tensor.type != T.UINT8 or index in custom_inputs or index in boundary:
            continue
        q = tensor.quantization
        scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
        values = data(tensor)
        if index in weight_axis:
            if values is None:
                raise ValueError(f"weights {tensor.name!r} are not constant")
            axis = weight_axis[index]
            real = ((values.astype(np.float32) - zero) * scale).reshape(tensor.shape)
            others = tuple(a for a in range(real.ndim) if a != axis)
            peak = np.abs(real).max(axis=others)
            channel_scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            shape = [1] * real.ndim
            shape[axis] = -1
            quant = np.clip(np.rint(real / channel_scale.reshape(shape)), -127, 127).astype(np.int8)
            set_data(tensor, quant)
            q.scale, q.zeroPoint, q.quantizedDimension = channel_scale.tolist(), [0] * len(channel_scale), axis
            old_weight_scale[index], new_weight_scale[index] = scale, channel_scale
        else:
            if values is not None:
                set_data(tensor, (values.astype(np.int16) - 128).astype(np.int8))
            q.zeroPoint = [zero - 128]
        tensor.type = T.INT8

    for bias, (inp, weight) in bias_of.items():
        if weight not in new_weight_scale:
            continue
        tensor = graph.tensors[bias]
        raw = data(tensor)
        if raw is None:
            continue
        input_scale = float(graph.tensors[inp].quantization.scale[0])
        real = raw.view(np.int32).astype(np.float64) * input_scale * old_weight_scale[weight]
        scales = input_scale * new_weight_scale[weight].astype(np.float64)
        set_data(tensor, np.rint(real / scales).astype(np.int32))
        tensor.quantization.scale = scales.astype(np.float32).tolist()
        tensor.quantization.zeroPoint = [0] * len(scales)
        tensor.quantization.quantizedDimension = 0

    quantize_code = _opcode(model, codes, fb, B.QUANTIZE)
    # uint8 graph inputs: consumers read an int8 twin written by a QUANTIZE op at the front
    for index in graph.inputs:
        if graph.tensors[index].type == T.UINT8:
            twin = _twin(graph, index, fb, T)
            for op in graph.operators:
                op.inputs = [twin if i == index else i for i in op.inputs]
            graph.operators.insert(0, _op(fb, quantize_code, index, twin))
    # uint8 graph outputs and custom-op inputs: producers write an int8 twin, a QUANTIZE op makes the uint8
    for index in sorted((set(graph.outputs) | custom_inputs) - set(graph.inputs)):
        tensor = graph.tensors[index]
        if tensor.type != T.UINT8 or data(tensor) is not None:
            continue
        producers = [k for k, op in enumerate(graph.operators) if index in op.outputs]
        if not producers:
            continue
        twin = _twin(graph, index, fb, T)
        producer = graph.operators[producers[0]]
        producer.outputs = [twin if o == index else o for o in producer.outputs]
        for op in graph.operators[producers[0] + 1:]:
            if index in op.inputs and codes[op.opcodeIndex] != B.CUSTOM:
                op.inputs = [twin if i == index else i for i in op.inputs]
        graph.operators.insert(producers[0] + 1, _op(fb, quantize_code, twin, index))
    return bytes(fu.convert_object_to_bytearray(model))


def _same_scale_into_concat(graph: Any, codes: list[int], B: Any) -> None:
    producer = {o: op for op in graph.operators for o in op.outputs}
    for op in graph.operators:
        if codes[op.opcodeIndex] != B.CONCATENATION:
            continue
        out = graph.tensors[op.outputs[0]].quantization
        for index in op.inputs:
            chain, maker = [index], producer.get(index)
            while maker is not None and codes[maker.opcodeIndex] == B.RESHAPE:
                chain.append(maker.inputs[0])
                maker = producer.get(maker.inputs[0])
            for t in chain:
                q = graph.tensors[t].quantization
                q.scale, q.zeroPoint = list(out.scale), list(out.zeroPoint)


def _opcode(model: Any, codes: list[int], fb: Any, builtin: int) -> int:
    if builtin in codes:
        return codes.index(builtin)
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 2
    model.operatorCodes.append(oc)
    codes.append(builtin)
    return len(codes) - 1


def _twin(graph: Any, index: int, fb: Any, T: Any) -> int:
    """A new int8 tensor with `index`'s shape and real values (zero point - 128)."""
    src = graph.tensors[index]
    twin = fb.TensorT()
    twin.shape, twin.type, twin.buffer = list(src.shape), T.INT8, 0
    name = src.name.decode() if isinstance(src.name, bytes) else str(src.name or "")
    twin.name = f"{name}/int8"
    q = fb.QuantizationParametersT()
    q.scale, q.zeroPoint = list(src.quantization.scale), [int(src.quantization.zeroPoint[0]) - 128]
    twin.quantization = q
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def _op(fb: Any, code: int, source: int, target: int) -> Any:
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, [source], [target]
    return op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="uint8-quantised .tflite")
    parser.add_argument("target", type=Path, help="where the int8-inside model is written")
    args = parser.parse_args(argv)
    original = args.source.read_bytes()
    converted = requantize(original)
    args.target.write_bytes(converted)
    print(f"{args.source.name} sha256 {hashlib.sha256(original).hexdigest()}")
    print(f"{args.target.name} sha256 {hashlib.sha256(converted).hexdigest()} ({len(converted)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
