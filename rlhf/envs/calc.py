"""The `calc` tool: arithmetic on numbers, read with `ast` (never `eval`), with size limits."""
from __future__ import annotations

import ast
import math
import operator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 64
"""Powers beyond this are refused: 9**9**9 would take minutes and gigabytes to compute."""
MAX_MAGNITUDE = 10**30
MAX_CHARS = 200


class CalcError(ValueError):
    """The expression is not plain arithmetic, or its result is out of range."""


def calculate(expression: str) -> str:
    """The value of an arithmetic expression (+ - * / // % ** and parentheses on numbers) as text;
    integers print as integers, other results rounded to 10 significant digits. CalcError otherwise."""
    text = expression.strip()
    if not text:
        raise CalcError("empty expression")
    if len(text) > MAX_CHARS:
        raise CalcError(f"expression longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalcError(f"not an arithmetic expression: {text!r}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalcError("result is not a finite number")
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


def _evaluate(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalcError(f"exponent {right} is over {MAX_EXPONENT}")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalcError("division by zero") from None
        except OverflowError:
            raise CalcError("result too large") from None
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise CalcError("result out of range")
        return value
    raise CalcError(f"only numbers and + - * / // % ** are allowed, not {type(node).__name__}")
