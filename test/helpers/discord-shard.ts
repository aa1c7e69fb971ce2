/**
 * A bot's Discord gateway shard, as far as its Lavalink client sees it, for the tests and
 * bench:lavalink: a voice state update (op 4) for a guild it knows is answered with the events
 * Discord sends — VOICE_STATE_UPDATE, and VOICE_SERVER_UPDATE when joining a channel — pointing
 * at a stand-in voice server (discord-voice-server.ts).
 */
import { Connector, type NodeOption } from 'shoukaku';

/** A guild's voice credentials on the stand-in, and where it listens. */
export interface ShardGuild {
  sessionId: string;
  token: string;
  endpoint: string;
}

/** What Discord sends the bot `botId` when it asks to join `channelId` of a guild (null: leave). */
export function voiceEvents(botId: string, guildId: string, guild: ShardGuild, channelId: string | null) {
  return [
    { t: 'VOICE_STATE_UPDATE', d: { guild_id: guildId, user_id: botId, session_id: guild.sessionId, channel_id: channelId, self_deaf: false, self_mute: false } },
    ...(channelId ? [{ t: 'VOICE_SERVER_UPDATE', d: { guild_id: guildId, token: guild.token, endpoint: guild.endpoint } }] : []),
  ];
}

/** shoukaku's Connector for bot `botId`, answering op 4 for the guilds in `guilds` a few ms later, as Discord does. */
export function fakeDiscordShard(botId: string, guilds: ReadonlyMap<string, ShardGuild>): Connector {
  class FakeDiscordShard extends Connector {
    getId() {
      return botId;
    }
    sendPacket(_shard: number, payload: { op: number; d: { guild_id: string; channel_id: string | null } }) {
      const guild = guilds.get(payload.d.guild_id);
      if (payload.op !== 4 || !guild) return;
      setTimeout(() => {
        for (const event of voiceEvents(botId, payload.d.guild_id, guild, payload.d.channel_id)) this.raw(event as never);
      }, 5);
    }
    listen(nodes: NodeOption[]) {
      setImmediate(() => this.ready(nodes));
    }
  }
  return new FakeDiscordShard({});
}
