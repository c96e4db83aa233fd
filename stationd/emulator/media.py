"""The part of a virtual iPad's file system AFC shows (/var/mobile/Media): an in-memory tree, bounded in size.

No host file is ever read or written: paths are names in this tree, normalised so that `..` cannot leave its root.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field

MEDIA_LIMIT = 64 * 1024 * 1024  # bytes all files of one virtual iPad may hold (uploads beyond it: no space left)
MAX_ENTRIES = 2000  # files and directories
MAX_PATH = 1024
MAX_NAME = 255
FRESH_DIRECTORIES = ("Books", "DCIM", "Downloads", "Photos", "iTunes_Control")


class MediaError(Exception):
    """A file operation that fails; `code` names the AFC status it answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Node:
    directory: bool
    data: bytearray = field(default_factory=bytearray)
    children: dict[str, Node] = field(default_factory=dict)
    created: int = field(default_factory=time.time_ns)
    modified: int = field(default_factory=time.time_ns)


def normalise(path: str) -> str:
    """An absolute path inside the tree ("/" is the Media root); refuse names a file system would refuse."""
    if "\x00" in path or len(path) > MAX_PATH:
        raise MediaError("INVALID_ARG", "the path is too long or holds a NUL byte")
    clean = posixpath.normpath("/" + path)
    while clean.startswith("//"):
        clean = clean[1:]
    if any(len(part) > MAX_NAME for part in clean.split("/")):
        raise MediaError("INVALID_ARG", "a name in the path is longer than 255 bytes")
    return clean


class MediaTree:
    """Files and directories of one virtual iPad; survives unplugging, an erase empties it."""

    def __init__(self) -> None:
        self.wipe()

    def wipe(self) -> None:
        self.root = Node(directory=True)
        self.size = 0
        self.entries = 0
        for name in FRESH_DIRECTORIES:
            self.make_directories("/" + name)

    def _parts(self, path: str) -> list[str]:
        return [part for part in normalise(path).split("/") if part]

    def find(self, path: str) -> Node:
        node = self.root
        for part in self._parts(path):
            if not node.directory or part not in node.children:
                raise MediaError("OBJECT_NOT_FOUND", f"no such file or directory: {normalise(path)}")
            node = node.children[part]
        return node

    def exists(self, path: str) -> bool:
        try:
            self.find(path)
        except MediaError:
            return False
        return True

    def _parent(self, path: str) -> tuple[Node, str]:
        parts = self._parts(path)
        if not parts:
            raise MediaError("INVALID_ARG", "the root itself cannot be changed")
        parent = self.find("/" + "/".join(parts[:-1]))
        if not parent.directory:
            raise MediaError("OBJECT_NOT_FOUND", f"{posixpath.dirname(normalise(path))} is not a directory")
        return parent, parts[-1]

    def _add(self, parent: Node, name: str, node: Node) -> Node:
        if self.entries >= MAX_ENTRIES:
            raise MediaError("NO_RESOURCES", f"the virtual iPad holds at most {MAX_ENTRIES} files and directories")
        parent.children[name] = node
        parent.modified = time.time_ns()
        self.entries += 1
        return node

    def make_directories(self, path: str) -> None:
        node = self.root
        for part in self._parts(path):
            child = node.children.get(part)
            if child is None:
                child = self._add(node, part, Node(directory=True))
            elif not child.directory:
                raise MediaError("OBJECT_EXISTS", f"{part} exists and is not a directory")
            node = child

    def open_file(self, path: str, create: bool, truncate: bool) -> Node:
        """The file at `path` (created or emptied as asked); its parent directory must exist."""
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            if not create:
                raise MediaError("OBJECT_NOT_FOUND", f"no such file: {normalise(path)}")
            node = self._add(parent, name, Node(directory=False))
        if node.directory:
            raise MediaError("OBJECT_IS_DIR", f"{normalise(path)} is a directory")
        if truncate:
            self.resize(node, 0)
        return node

    def resize(self, node: Node, length: int, room: int | None = None) -> None:
        """Grow or shrink a file; growing past the tree's limit (or `room` more bytes) is refused."""
        grow = length - len(node.data)
        if grow > 0 and (self.size + grow > MEDIA_LIMIT or (room is not None and grow > room)):
            raise MediaError("NO_SPACE_LEFT", "no space left on the virtual iPad")
        if grow > 0:
            node.data.extend(bytes(grow))
        else:
            del node.data[length:]
        self.size += grow
        node.modified = time.time_ns()

    def write(self, node: Node, offset: int, data: bytes, room: int | None = None) -> None:
        end = offset + len(data)
        if end > len(node.data):
            self.resize(node, end, room)
        node.data[offset:end] = data
        node.modified = time.time_ns()

    def read(self, path: str) -> bytes:
        node = self.find(path)
        if node.directory:
            raise MediaError("OBJECT_IS_DIR", f"{normalise(path)} is a directory")
        return bytes(node.data)

    def list(self, path: str) -> list[str]:
        node = self.find(path)
        if not node.directory:
            raise MediaError("OBJECT_NOT_FOUND", f"{normalise(path)} is not a directory")
        return sorted(node.children)

    def remove(self, path: str) -> None:
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            raise MediaError("OBJECT_NOT_FOUND", f"no such file or directory: {normalise(path)}")
        if node.directory and node.children:
            raise MediaError("DIR_NOT_EMPTY", f"{normalise(path)} is not empty")
        del parent.children[name]
        self.size -= len(node.data)
        self.entries -= 1

    def rename(self, source: str, target: str) -> None:
        old_parent, old_name = self._parent(source)
        node = old_parent.children.get(old_name)
        if node is None:
            raise MediaError("OBJECT_NOT_FOUND", f"no such file or directory: {normalise(source)}")
        if node.directory and (normalise(target) + "/").startswith(normalise(source) + "/"):
            raise MediaError("INVALID_ARG", "a directory cannot move into itself")
        new_parent, new_name = self._parent(target)
        existing = new_parent.children.get(new_name)
        if existing is not None and existing is not node:
            if existing.directory and existing.children:
                raise MediaError("DIR_NOT_EMPTY", f"{normalise(target)} is not empty")
            self.size -= len(existing.data)
            self.entries -= 1
        del old_parent.children[old_name]
        new_parent.children[new_name] = node

    def info(self, path: str) -> dict[str, str]:
        """What AFC's GetFileInfo answers: the stat fields as strings (times in nanoseconds)."""
        node = self.find(path)
        size = len(node.data) if not node.directory else 64 + 32 * len(node.children)
        return {
            "st_size": str(size),
            "st_blocks": str((size + 511) // 512),
            "st_nlink": str(2 + sum(1 for c in node.children.values() if c.directory) if node.directory else 1),
            "st_ifmt": "S_IFDIR" if node.directory else "S_IFREG",
            "st_mtime": str(node.modified),
            "st_birthtime": str(node.created),
        }

    def snapshot(self) -> dict[str, object]:
        files: dict[str, int] = {}

        def walk(node: Node, prefix: str) -> None:
            for name, child in sorted(node.children.items()):
                if child.directory:
                    walk(child, f"{prefix}/{name}")
                else:
                    files[f"{prefix}/{name}"] = len(child.data)

        walk(self.root, "")
        return {"bytes": self.size, "files": files}
