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
  readonly encode: (value: V, dialect: Dialect) => SqlValue;
  readonly decode: (raw: unknown) => V;
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

type Encoder = (record: unknown, key?: string) => SqlValue[];
type Decoder = (row: Row) => unknown;
type Encode = (value: unknown, dialect: Dialect) => SqlValue;
type Decode = (raw: unknown) => unknown;

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function identifier(name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`tables: "${name}" is not a plain identifier`);
  return name;
}

/*
 * A table's encoders and its decoder are compiled once, when tables.ts loads: for the leases
 * table, `(r) => [r.id, r.appId, …, enc[15](r.slotIndexes, d), …]`. A loop over the columns does
 * the same work ~9× slower (measured on Node 20: 0.43 µs per lease INSERT's parameters and 0.23
 * per UPDATE's, against 0.05 and 0.04 compiled; its keyed loads go megamorphic), which is ~1% of
 * an admit+release cycle's CPU on the SQLite hot path, where the hand-written lists these replace
 * cost nothing. The compiled functions read each field directly, as those lists did. Only our own
 * declarations go into them: field and column names must be plain identifiers (checked), and the
 * codecs are passed in as values, never as text.
 */

function compileEncoder(
  fields: readonly string[],
  encoders: readonly Encode[],
  dialect: Dialect,
  withKey: boolean,
): Encoder {
  const values = fields.map((field, i) =>
    encoders[i] === same ? `r.${identifier(field)}` : `enc[${i}](r.${identifier(field)}, d)`,
  );
  if (withKey) values.unshift("key ?? null");
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- compiled once from tables.ts (see above)
  const make = new Function(
    "enc",
    "d",
    `"use strict"; return function encode(r, key) { return [${values.join(", ")}]; };`,
  ) as (enc: readonly Encode[], d: Dialect) => Encoder;
  return make(encoders, dialect);
}

function compileDecoder(fields: readonly string[], names: readonly string[], decoders: readonly Decode[]): Decoder {
  const entries = fields.map((field, i) => `${identifier(field)}: dec[${i}](row.${identifier(names[i] ?? "")})`);
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- compiled once from tables.ts (see above)
  const make = new Function(
    "dec",
    `"use strict"; return function decode(row) { return { ${entries.join(", ")} }; };`,
  ) as (dec: readonly Decode[]) => Decoder;
  return make(decoders);
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
  private readonly decoder: Decoder;
  private readonly insertEncoders: Readonly<Record<Dialect, Encoder>>;
  private readonly updateEncoders: Readonly<Record<Dialect, Encoder>>;

  constructor(
    readonly name: string,
    columns: Columns<R>,
    options: TableOptions<R, M, G> = {},
  ) {
    const all = (Object.keys(columns) as (keyof R & string)[]).map((field) => ({
      field,
      column: columns[field] as Column<unknown>,
    }));
    const generated = new Set<keyof R>(options.generated ?? []);
    const inserted = all.filter((c) => !generated.has(c.field));
    const mutable = (options.mutable ?? []).map((field) => ({
      field: field as keyof R & string,
      column: columns[field] as Column<unknown>,
    }));
    this.key = options.key ?? null;
    this.selectList = all.map((c) => c.column.name).join(", ");
    this.insertNames = [...(this.key ? [this.key.name] : []), ...inserted.map((c) => c.column.name)];
    this.mutableNames = mutable.map((c) => c.column.name);

    this.decoder = compileDecoder(
      all.map((c) => c.field),
      all.map((c) => c.column.name),
      all.map((c) => c.column.decode),
    );
    const encoders = (list: typeof all, withKey: boolean): Record<Dialect, Encoder> => {
      const fields = list.map((c) => c.field);
      const encode = list.map((c) => c.column.encode);
      return {
        sqlite: compileEncoder(fields, encode, "sqlite", withKey),
        postgres: compileEncoder(fields, encode, "postgres", withKey),
      };
    };
    this.insertEncoders = encoders(inserted, this.key !== null);
    this.updateEncoders = encoders(mutable, false);
  }

  decode(row: Row): R {
    return this.decoder(row) as R;
  }

  /** The parameters of an INSERT, in the order of `insertNames` (`key`: the value of the outside key column, if the table has one). */
  insertParams(record: Omit<R, G>, dialect: Dialect, key?: string): SqlValue[] {
    return this.insertEncoders[dialect](record, key);
  }

  /** The parameters of an UPDATE's SET, in the order of `mutableNames`. */
  updateParams(values: Pick<R, M>, dialect: Dialect): SqlValue[] {
    return this.updateEncoders[dialect](values);
  }
}
