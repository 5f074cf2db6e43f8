"""A small XML reader that remembers line numbers, so errors can point at the element."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from xml.parsers import expat

from pathray.errors import FormatError


class XmlDoc:
    """A parsed XML file: its root element and the line on which each element starts.

    Args:
        data: The file's bytes.
        source: How messages name the file.

    Raises:
        FormatError: The bytes are not well-formed XML.
    """

    def __init__(self, data: bytes, source: str) -> None:
        self.source = source
        self._lines: dict[int, int] = {}
        self._keep: list[ET.Element] = []
        stack: list[ET.Element] = []
        roots: list[ET.Element] = []
        parser = expat.ParserCreate()

        def start(tag: str, attrs: dict[str, str]) -> None:
            elem = ET.Element(tag, attrs)
            self._lines[id(elem)] = parser.CurrentLineNumber
            self._keep.append(elem)
            if stack:
                stack[-1].append(elem)
            else:
                roots.append(elem)
            stack.append(elem)

        def end(tag: str) -> None:
            stack.pop()

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        try:
            parser.Parse(data, True)
        except expat.ExpatError as exc:
            raise FormatError(
                f"{source}: is not well-formed XML ({expat.ErrorString(exc.code)} "
                f"at line {exc.lineno}, column {exc.offset + 1})."
            ) from exc
        if not roots:  # pragma: no cover - expat rejects documents without an element
            raise FormatError(f"{source}: contains no XML element.")
        self.root = roots[0]

    def line(self, elem: ET.Element) -> int:
        """Return the line on which ``elem`` starts."""
        return self._lines.get(id(elem), 0)

    def where(self, elem: ET.Element) -> str:
        """Return ``"<file>: element <Tag> at line N"`` for messages."""
        return f"{self.source}: element <{elem.tag}> at line {self.line(elem)}"

    def attr(self, elem: ET.Element, name: str) -> str:
        """Return a required attribute, or raise FormatError naming the element and line."""
        value = elem.get(name)
        if value is None:
            raise FormatError(f"{self.where(elem)} lacks attribute {name}.")
        return value

    def float_attr(self, elem: ET.Element, name: str) -> float:
        """Return a required numeric attribute (a decimal comma is accepted, as ASAP may write).

        Raises:
            FormatError: missing, not a number, NaN or infinite.
        """
        raw = self.attr(elem, name).strip()
        text = raw.replace(",", ".") if "," in raw and "." not in raw else raw
        try:
            value = float(text)
        except ValueError:
            raise FormatError(
                f"{self.where(elem)}: attribute {name} must be a number. Got {raw!r} instead."
            ) from None
        if not math.isfinite(value):
            raise FormatError(
                f"{self.where(elem)}: attribute {name} must be a finite number. "
                f"Got {raw!r} instead."
            )
        return value


def sniff_root_tag(data: bytes) -> str | None:
    """Return the name of the first element in ``data`` without parsing the whole file."""
    found: list[str] = []
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        found.append(tag)
        raise StopIteration

    parser.StartElementHandler = start
    try:
        parser.Parse(data[:65536], False)
    except StopIteration:
        pass
    except expat.ExpatError:
        return None
    return found[0] if found else None
