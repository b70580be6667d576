import type { DeviceSpec } from "@gpupool/core";
import { decodeDevices, encodeDevices } from "./devices-json.js";

/** A row as either adapter returns it, by column name. */
export type Row = Record<string, unknown>;

/** A statement parameter as both drivers take it. */
export type SqlValue = string | number | boolean | null;

export type Dialect = "sqlite" | "postgres";

/**
 * How one record field is stored in one column. The schemas of both adapters are the same; only
 * the value types differ a little (PostgreSQL's BIGINT arrives as a string and its BOOLEAN as a
 * boolean, SQLite's as numbers), which `decode` absorbs, and SQLite has no BOOLEAN, which
 * `encode` spells as 0/1 there.
 */
export interface Column<V> {
  readonly name: string;
  encode(value: V, dialect: Dialect): SqlValue;
  decode(raw: unknown): V;
}

const isMissing = (v: unknown): v is null | undefined => v === null || v === undefined;
/** TEXT columns come back as strings (or null). */
const asText = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v));
const same = <V extends SqlValue>(value: V): SqlValue => value;

export function integer(name: string): Column<number> {
  return { name, encode: same, decode: Number };
}

export function integerOrNull(name: string): Column<number | null> {
  return { name, encode: same, decode: (v) => (isMissing(v) ? null : Number(v)) };
}

/** DOUBLE PRECISION on PostgreSQL, REAL on SQLite. */
export function real(name: string): Column<number> {
  return integer(name);
}

export function text<T extends string = string>(name: string): Column<T> {
  return { name, encode: same, decode: (v) => asText(v) as T };
}

export function textOrNull(name: string): Column<string | null> {
  return { name, encode: same, decode: (v) => (isMissing(v) ? null : asText(v)) };
}

/** BOOLEAN on PostgreSQL; 0/1 in an INTEGER column on SQLite. */
export function boolean(name: string): Column<boolean> {
  return {
    name,
    encode: (v, dialect) => (dialect === "sqlite" ? (v ? 1 : 0) : v),
    decode: (v) => v === true || Number(v) === 1,
  };
}

/** Slot indexes as "0,1" (NULL before a grant). */
export function slotList(name: string): Column<readonly number[] | null> {
  return {
    name,
    encode: (slots) => (slots === null ? null : slots.join(",")),
    decode: (v) =>
      typeof v === "string"
        ? v
            .split(",")
            .filter((s) => s !== "")
            .map(Number)
        : null,
  };
}

/** A node's registered devices as JSON text (see devices-json.ts); NULL when it never registered. */
export function devicesJson(name: string): Column<readonly DeviceSpec[] | null> {
  return { name, encode: (devices) => encodeDevices(devices), decode: decodeDevices };
}

/** Every field of a record, each with its column. */
export type Columns<R> = { readonly [K in keyof R]-?: Column<R[K]> };

interface FieldColumn<R> {
  readonly field: keyof R;
  readonly column: Column<R[keyof R]>;
}

export interface TableOptions<R, M extends keyof R, G extends keyof R> {
  /** Fields the database assigns on insert (SQLite's rowid alias, PostgreSQL's identity column). */
  readonly generated?: readonly G[];
  /**
   * Fields an UPDATE sets, in this order: only what changes. Naming an indexed column in SET makes
   * SQLite rewrite that index entry even when the value is unchanged.
   */
  readonly mutable?: readonly M[];
  /** A column that identifies the row but is no field of the record (ledgers: the identity); an insert takes its value first. */
  readonly key?: Column<string>;
}

/** What an adapter builds a statement's text from. */
export interface TableNames {
  readonly name: string;
  /** Column names of every field, in declaration order: what a SELECT lists. */
  readonly selectList: string;
  /** Column names an INSERT lists (the outside key first, then the fields not generated). */
  readonly insertNames: readonly string[];
  /** Column names an UPDATE sets, in the order of `updateParams`. */
  readonly mutableNames: readonly string[];
}

/**
 * One entity's table: which column holds each field of its record and how (`R`), which fields an
 * UPDATE sets (`M`), which the database assigns on insert (`G`). Both adapters build their
 * statements' text from it once, when their module loads, and read rows back through it, so a
 * field is added in one place (and a migration).
 */
export class Table<R, M extends keyof R = never, G extends keyof R = never> implements TableNames {
  readonly selectList: string;
  readonly insertNames: readonly string[];
  readonly mutableNames: readonly string[];
  readonly key: Column<string> | null;
  private readonly all: readonly FieldColumn<R>[];
  private readonly inserted: readonly FieldColumn<R>[];
  private readonly mutable: readonly FieldColumn<R>[];

  constructor(
    readonly name: string,
    columns: Columns<R>,
    options: TableOptions<R, M, G> = {},
  ) {
    const fields = Object.keys(columns) as (keyof R)[];
    const byField = (field: keyof R): FieldColumn<R> => ({ field, column: columns[field] });
    this.all = fields.map(byField);
    const generated = new Set<keyof R>(options.generated ?? []);
    this.inserted = this.all.filter((c) => !generated.has(c.field));
    this.mutable = (options.mutable ?? []).map(byField);
    this.key = options.key ?? null;
    this.selectList = this.all.map((c) => c.column.name).join(", ");
    this.insertNames = [...(this.key ? [this.key.name] : []), ...this.inserted.map((c) => c.column.name)];
    this.mutableNames = this.mutable.map((c) => c.column.name);
  }

  decode(row: Row): R {
    const record: Partial<Record<keyof R, unknown>> = {};
    for (const { field, column } of this.all) record[field] = column.decode(row[column.name]);
    return record as R;
  }

  /** The parameters of an INSERT, in the order of `insertNames` (`key`: the value of the outside key column, if the table has one). */
  insertParams(record: Omit<R, G>, dialect: Dialect, key?: string): SqlValue[] {
    const params: SqlValue[] = this.key ? [key ?? null] : [];
    for (const { field, column } of this.inserted) params.push(column.encode((record as R)[field], dialect));
    return params;
  }

  /** The parameters of an UPDATE's SET, in the order of `mutableNames`. */
  updateParams(values: Pick<R, M>, dialect: Dialect): SqlValue[] {
    const params: SqlValue[] = [];
    for (const { field, column } of this.mutable) params.push(column.encode((values as R)[field], dialect));
    return params;
  }
}
