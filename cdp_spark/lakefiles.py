"""File operations on lakehouse paths (local, s3a://, abfss://, hdfs://) through Spark's Hadoop file system.

Shared by the stages that handle files beside the Delta tables: export folders and manifests, erasure
request files, the generated hash key.
"""

from __future__ import annotations

import os

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession


class LakeFiles:
    """File operations on local or remote (s3a://, abfss://, hdfs://) paths through Spark's Hadoop file system."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str):  # noqa: ANN202 - py4j objects
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        fs = p.getFileSystem(self._conf)
        if fs.getScheme() == "file":
            # The raw local file system: no hidden .crc file next to every export file.
            fs = fs.getRawFileSystem()
        return fs, p

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        if fs.exists(p):
            fs.delete(p, True)

    def names(self, path: str) -> list[str]:
        fs, p = self._fs(path)
        if not fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def rename(self, source: str, target: str) -> None:
        fs, p = self._fs(source)
        if not fs.rename(p, self._jvm.org.apache.hadoop.fs.Path(target)):
            raise OSError(f"could not rename {source} to {target}")

    def sha256(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            return str(self._jvm.org.apache.commons.codec.digest.DigestUtils.sha256Hex(stream))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def _write_tmp(self, path: str, text: str, private: bool = False) -> str:
        """Write ``text`` to ``<path>.tmp`` (owner-only first when ``private``); returns the temporary path."""
        tmp = path + ".tmp"
        fs, p = self._fs(tmp)
        out = fs.create(p, True)
        try:
            if private:
                fs.setPermission(p, self._jvm.org.apache.hadoop.fs.permission.FsPermission(0o600))
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return tmp

    def write_text(self, path: str, text: str) -> None:
        """Write via a temporary file and a rename, so a reader never sees half a manifest."""
        tmp = self._write_tmp(path, text)
        self.delete(path)
        self.rename(tmp, path)

    def create_new(self, path: str, text: str) -> bool:
        """Create ``path`` holding ``text`` only if no file is there: False, and nothing written, if one is. Atomic
        where the file system's exclusive create is (local: O_EXCL; HDFS, ABFS, GCS: create without overwrite);
        a reader may see the file before its text."""
        fs, p = self._fs(path)
        fs.mkdirs(p.getParent())
        if fs.getUri().getScheme() == "file":
            local = str(fs.makeQualified(p).toUri().getPath())
            try:
                descriptor = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(text)
            return True
        try:
            out = fs.create(p, False)
        except Py4JJavaError as exc:
            if "FileAlreadyExistsException" in str(exc.java_exception.getClass().getName()):
                return False
            raise
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return True

    def overwrite(self, path: str, text: str) -> None:
        """Replace the file's text in place (no moment without the file, unlike :meth:`write_text`); a reader may see
        it part written."""
        fs, p = self._fs(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def write_private(self, path: str, text: str) -> None:
        """Write a file only its owner may read (mode 0600 where the file system has permissions, set before
        any byte is written), via a temporary file and a rename."""
        self.rename(self._write_tmp(path, text, private=True), path)

    def last_modified(self, path: str) -> float:
        """The newest modification time (epoch seconds) of ``path`` or any file under it."""
        fs, p = self._fs(path)
        newest = fs.getFileStatus(p).getModificationTime()
        found = fs.listFiles(p, True)
        while found.hasNext():
            newest = max(newest, found.next().getModificationTime())
        return newest / 1000.0
