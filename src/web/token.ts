/**
 * Where the page keeps the gateway's token (CHORUS_TOKEN). A token is a password: it is never
 * shown, logged or left in the address bar, so a copied link or the browser history does not
 * carry it.
 *
 *   ?token=… in the URL   taken once, then removed from the address bar; kept for this tab
 *   this tab              sessionStorage: survives a reload, gone when the tab closes
 *   this browser          localStorage, only when the user ticks "Remember on this browser"
 */

const KEY = 'chorus.token';

/** The token to use at load: the URL's (then removed from it), this tab's, or this browser's. */
export function takeToken(): string | undefined {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl !== null) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
    if (fromUrl) {
      saveToken(fromUrl, false);
      return fromUrl;
    }
  }
  return read(sessionStorage) ?? read(localStorage);
}

export function saveToken(token: string, remember: boolean): void {
  write(sessionStorage, token);
  if (remember) write(localStorage, token);
  else remove(localStorage);
}

export function forgetToken(): void {
  remove(sessionStorage);
  remove(localStorage);
}

// Storage may be off (privacy settings): the token then lives in memory for this page only.
function read(storage: Storage): string | undefined {
  try {
    return storage.getItem(KEY) || undefined;
  } catch {
    return undefined;
  }
}

function write(storage: Storage, token: string): void {
  try {
    storage.setItem(KEY, token);
  } catch {
    // kept in memory only
  }
}

function remove(storage: Storage): void {
  try {
    storage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}
